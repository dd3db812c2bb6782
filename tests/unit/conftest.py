"""Fixtures the unit tests share."""

from __future__ import annotations

from typing import Any

import pytest

from remediator.templating import memo as template_memo


@pytest.fixture
def memo_off(monkeypatch: pytest.MonkeyPatch) -> Any:
    """`memo_off(True)` renders every template again; `memo_off(False)` keeps renders
    (the default). Either way what was kept is forgotten."""
    def switch(off: bool) -> None:
        template_memo.clear()
        template_memo._plans.clear()
        if off:
            monkeypatch.setattr(template_memo, "_reads", lambda *a: False)
        else:
            monkeypatch.undo()
    yield switch
    switch(False)
