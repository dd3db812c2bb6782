"""Every action by name. Adding an action touches its own module and this list, nothing else.

Third-party actions come from installed packages through the entry-point group
`remediator.actions` (docs/plugins.md): each entry names an `Action` subclass, which then
is validated, linted, planned in dry-run, guarded and granted RBAC exactly like a built-in.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
from collections.abc import Iterable

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

BUILTIN: dict[str, Action] = {
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


PLUGIN_GROUP = "remediator.actions"
_PLUGIN_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")  # namespaced: vendor.verb
# A plugin that cannot be used; the validator reports each as an error, so serve, lint and
# test refuse to run with a broken plugin installed rather than without it.
PLUGIN_PROBLEMS: list[str] = []
log = logging.getLogger("remediator.actions")


def load_plugins(builtin: dict[str, Action], entries: Iterable[importlib.metadata.EntryPoint]
                 | None = None) -> tuple[dict[str, Action], list[str]]:
    """Built-ins plus every installed plugin's action; (actions, problems)."""
    actions, problems = dict(builtin), []
    if entries is None:
        entries = importlib.metadata.entry_points(group=PLUGIN_GROUP)
    for entry in sorted(entries, key=lambda e: e.name):
        where = f"plugin {entry.name!r} ({entry.value})"
        try:
            cls = entry.load()
            action = cls() if isinstance(cls, type) else None
        except Exception as exc:  # a broken plugin is reported, never a traceback
            problems.append(f"{where}: cannot load: {type(exc).__name__}: {exc}")
            continue
        if not isinstance(action, Action):
            problems.append(f"{where}: not a subclass of remediator.actions.base.Action")
        elif action.name != entry.name or not _PLUGIN_NAME.fullmatch(action.name):
            problems.append(f"{where}: its name must be the entry point's and namespaced "
                            f"(vendor.verb), got {action.name!r}")
        elif action.name in actions:
            problems.append(f"{where}: {action.name!r} is already an action; a plugin cannot "
                            "replace one")
        else:
            actions[action.name] = action
            log.debug("action plugin %s loaded from %s", action.name, entry.value)
    return actions, problems


ACTIONS, PLUGIN_PROBLEMS = load_plugins(BUILTIN)


def get_action(name: str) -> Action | None:
    return ACTIONS.get(name)
