"""Every action by name. Adding an action touches its own module and this list, nothing else.

Third-party actions come from installed packages through the entry-point group
`remediator.actions` (docs/plugins.md): each entry names an `Action` subclass, which then
is validated, linted, planned in dry-run, guarded and granted RBAC exactly like a built-in.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import re
from collections.abc import Iterable, Iterator, MutableMapping

from .base import Action

# Each built-in action's name, and the module (of this package) and class that implement it.
# The module is imported, and the action made, when the action is first looked up: `serve`
# is ready before its first alert (the modules were a twentieth of its start-up), and most
# of a rule set's actions never run. test_action_registry checks each class has its name.
_BUILTIN: dict[str, tuple[str, str]] = {
    "log": ("core", "Log"), "wait": ("core", "Wait"), "check": ("core", "Check"),
    "http.request": ("http", "HttpRequest"),
    "prometheus.query": ("prometheus", "PrometheusQuery"),
    "prometheus.wait_until": ("prometheus", "PrometheusWaitUntil"),
    "kubernetes.rollout_restart": ("kubernetes", "RolloutRestart"),
    "kubernetes.rollout_status": ("kubernetes", "RolloutStatus"),
    "kubernetes.rollout_undo": ("kubernetes", "RolloutUndo"),
    "kubernetes.scale": ("kubernetes", "Scale"), "kubernetes.set_env": ("kubernetes", "SetEnv"),
    "kubernetes.delete_pods": ("kube_pods", "DeletePods"), "kubernetes.logs": ("kube_pods", "Logs"),
    "kubernetes.get": ("kubernetes", "Get"), "kubernetes.exec": ("kube_exec", "Exec"),
    "alertmanager.alert_status": ("alertmanager", "AlertStatus"),
    "alertmanager.silence": ("alertmanager", "Silence"),
    "s3.head_object": ("s3", "HeadObject"), "s3.head_bucket": ("s3", "HeadBucket"),
    "s3.verify_checksum": ("s3_integrity", "VerifyChecksum"),
    "s3.list_object_versions": ("s3", "ListObjectVersions"),
    "s3.restore_version": ("s3", "RestoreVersion"),
    "s3.sample_integrity": ("s3_integrity", "SampleIntegrity"),
    "s3.object_stats": ("s3", "ObjectStats"), "evidence.bundle": ("evidence", "EvidenceBundle"),
    "docker.restart": ("docker", "Restart"), "docker.logs": ("docker", "Logs"),
    "docker.inspect": ("docker", "Inspect"), "docker.wait_healthy": ("docker", "WaitHealthy"),
    "docker.stats": ("docker", "Stats"), "docker.copy_out": ("docker", "CopyOut"),
    "docker.exec": ("docker_exec", "Exec"),
}


@functools.cache
def _builtin(name: str) -> Action:
    """The built-in action `name`, made once (BUILTIN and ACTIONS hold the same one)."""
    module, cls = _BUILTIN[name]
    action: Action = getattr(importlib.import_module(f"{__package__}.{module}"), cls)()
    return action


class Actions(MutableMapping[str, Action]):
    """Actions by name: every built-in's name from the start, its action made when first
    looked up (`_builtin`), and whatever else is set (plugins)."""

    def __init__(self, builtin: Iterable[str] = (), made: dict[str, Action] | None = None):
        self._builtin = dict.fromkeys(builtin)  # names still looked up in `_builtin`
        self._made = dict(made or {})

    def __getitem__(self, name: str) -> Action:
        try:
            return self._made[name]
        except KeyError:
            if name not in self._builtin:
                raise
        action = self._made[name] = _builtin(name)
        return action

    def __setitem__(self, name: str, action: Action) -> None:
        self._made[name] = action  # found before a built-in of that name

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self._made.pop(name, None)
        self._builtin.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._made or name in self._builtin

    def __iter__(self) -> Iterator[str]:
        return iter({**self._builtin, **self._made})

    def __len__(self) -> int:
        return len(self._builtin.keys() | self._made.keys())

    def copy(self) -> Actions:
        actions = Actions()
        actions._builtin, actions._made = dict(self._builtin), dict(self._made)
        return actions


BUILTIN = Actions(_BUILTIN)


PLUGIN_GROUP = "remediator.actions"
_PLUGIN_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")  # namespaced: vendor.verb
# A plugin that cannot be used; the validator reports each as an error, so serve, lint and
# test refuse to run with a broken plugin installed rather than without it.
PLUGIN_PROBLEMS: list[str] = []
log = logging.getLogger("remediator.actions")


def load_plugins(builtin: Actions, entries: Iterable[importlib.metadata.EntryPoint]
                 | None = None) -> tuple[Actions, list[str]]:
    """Built-ins plus every installed plugin's action; (actions, problems)."""
    actions, problems = builtin.copy(), []
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
