"""The Debian packages a benchmark needs, installed with apt-get when missing (a fresh machine)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def _present(command: str) -> bool:
    return Path(command).exists() if command.startswith("/") else shutil.which(command) is not None


def ensure(packages: dict[str, str]) -> None:
    """`packages`: a command (or an absolute path) -> the Debian package that provides it."""
    missing = sorted({package for command, package in packages.items() if not _present(command)})
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends",
                        *missing], check=True, env=env)
    if still := [command for command in packages if not _present(command)]:
        raise SystemExit(f"missing after apt-get install: {', '.join(still)}")
