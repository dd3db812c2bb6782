"""The one pipeline: alert → matched playbooks → plan → guards → steps → outcome → note.

`serve`, `replay` and `test` all call `Engine.process`; they differ only in the store, the
mode, the clock and the runner they hand in. `pipeline.py` decides (the Engine), `steps.py`
runs one step (its checks, its guards, then its plan or its call), `records.py` writes
(journal, final record, note), `plans.py` keeps what a step's checks and a dry run's plan of
it need not make again, `approvals.py` finishes what an approval blocked.
"""

from .pipeline import PLAN_CHUNK, Engine
from .records import Unrecorded, execution_id

__all__ = ["PLAN_CHUNK", "Engine", "Unrecorded", "execution_id"]
