"""Hold a benchmark's server process to a fraction of a CPU, as a pod's
`resources.limits.cpu` does: each process in a cgroup of its own with a CFS quota (cgroup v2
`cpu.max`, else cgroup v1 `cpu.cfs_quota_us`), so servers that run on separate nodes in
production can be measured side by side on one small machine.

Writing a PID to `cgroup.procs` moves every thread of that process, and threads or children it
starts later are born in the same group, so the whole server is covered. `release()` moves
anything left back to the parent group and removes the groups: call it in a `finally`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

PERIOD_US = 100_000  # the CFS period Kubernetes uses for CPU limits


def _mounts() -> list[tuple[str, Path, set[str]]]:
    """(filesystem type, mount point, options) of every cgroup hierarchy mounted."""
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        _, where, kind, options, *_ = line.split()
        if kind in ("cgroup", "cgroup2"):
            found.append((kind, Path(where), set(options.split(","))))
    return found


def _hierarchy() -> tuple[int, Path]:
    """The cgroup version and mount point to use: v2 when its cpu controller is available
    there (a v1 mount of `cpu` takes the controller away from v2), else the v1 `cpu` mount."""
    mounts = _mounts()
    for kind, where, _ in mounts:
        controllers = where / "cgroup.controllers"
        if kind == "cgroup2" and controllers.exists() and "cpu" in controllers.read_text().split():
            return 2, where
    for kind, where, options in mounts:
        if kind == "cgroup" and "cpu" in options:
            return 1, where
    raise OSError("no cgroup hierarchy with the cpu controller is mounted")


class CpuQuota:
    """cgroups each holding one process to `fraction` of a CPU."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction
        self.version, self.root = _hierarchy()
        self.groups: dict[int, Path] = {}
        if self.version == 2:  # a v2 child gets a controller only if its parent delegates it
            control = self.root / "cgroup.subtree_control"
            if "cpu" not in control.read_text().split():
                control.write_text("+cpu")
        probe = subprocess.Popen(["sleep", "60"])  # fail here, before measuring, if we may not
        try:
            self.hold(probe.pid)
        finally:
            probe.kill()
            probe.wait()
            self.release()

    def hold(self, pid: int) -> int:
        """Put process `pid` (all its threads) in a new group limited to the quota."""
        group = self.root / f"remediator-bench-{os.getpid()}-{pid}"
        group.mkdir()
        self.groups[pid] = group
        quota = max(1000, round(self.fraction * PERIOD_US))
        if self.version == 2:
            (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        (group / "cgroup.procs").write_text(str(pid))
        return pid

    def throttling(self, pid: int) -> tuple[int, int, float]:
        """(CFS periods, periods throttled, seconds throttled) of `pid`'s group so far."""
        stat = dict(line.split() for line in (self.groups[pid] / "cpu.stat").read_text().splitlines())
        seconds = (int(stat["throttled_usec"]) / 1e6 if self.version == 2
                   else int(stat["throttled_time"]) / 1e9)
        return int(stat["nr_periods"]), int(stat["nr_throttled"]), seconds

    def release(self, *pids: int) -> None:
        """Remove the groups of `pids` (all groups if none given), moving any process still
        in them back to the parent group first."""
        for pid in pids or list(self.groups):
            group = self.groups.pop(pid, None)
            if group is None:
                continue
            for left in (group / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):  # it may have exited meanwhile
                    (group.parent / "cgroup.procs").write_text(left)
            group.rmdir()
