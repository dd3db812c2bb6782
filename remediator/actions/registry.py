"""Every action by name. Adding an action touches its own module and this list, nothing else."""

from __future__ import annotations

from .alertmanager import AlertStatus, Silence
from .base import Action
from .core import Check, Log, Wait
from .docker import CopyOut, Inspect, Restart, Stats, WaitHealthy
from .docker import Logs as DockerLogs
from .docker_exec import Exec as DockerExec
from .evidence import EvidenceBundle
from .http import HttpRequest
from .kube_exec import Exec
from .kubernetes import DeletePods, Get, Logs, RolloutRestart, RolloutStatus, RolloutUndo, Scale, SetEnv
from .prometheus import PrometheusQuery, PrometheusWaitUntil
from .s3 import HeadBucket, HeadObject, ListObjectVersions, ObjectStats, RestoreVersion
from .s3_integrity import SampleIntegrity, VerifyChecksum

ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Log(), Wait(), Check(), HttpRequest(),
        PrometheusQuery(), PrometheusWaitUntil(),
        RolloutRestart(), RolloutStatus(), RolloutUndo(), Scale(), SetEnv(), DeletePods(), Logs(),
        Get(), Exec(),
        AlertStatus(), Silence(),
        HeadObject(), HeadBucket(), VerifyChecksum(), ListObjectVersions(), RestoreVersion(),
        SampleIntegrity(), ObjectStats(), EvidenceBundle(),
        Restart(), DockerLogs(), Inspect(), WaitHealthy(), Stats(), CopyOut(), DockerExec(),
    )
}


def get_action(name: str) -> Action | None:
    return ACTIONS.get(name)
