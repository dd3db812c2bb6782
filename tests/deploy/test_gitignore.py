"""What `remediator serve` leaves in a checkout (README's first command) is ignored by git,
so a fresh clone that ran it shows a clean `git status`."""

from __future__ import annotations

import subprocess
from pathlib import Path

from remediator.playbooks.parse_cache import PREFIX, SUFFIX, TMP_SUFFIX

ROOT = Path(__file__).resolve().parents[2]


def test_what_serve_leaves_beside_its_default_store_is_ignored():
    left = ["remediator.db", "remediator.db-wal", "remediator.db-shm", "remediator.db.lock",
            f"{PREFIX}0123456789abcdef{SUFFIX}", f"{PREFIX}k3j2_x{TMP_SUFFIX}"]
    done = subprocess.run(["git", "check-ignore", "--no-index", *left], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert done.stdout.split() == left, done
