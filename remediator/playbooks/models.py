"""Typed playbooks, built from data the validator has already accepted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..actions.base import parse_duration
from ..alerts import built as _built
from .matchers import Matcher, parse_matcher

DEFAULT_RETRIES = 3
# How long an alert's resolution waits for its episode's firing run to stop before it
# decides its `on_resolved` (`Engine._execute`): this long for a run in its own process
# (`InFlight.resolve`), then this long again while the run's alert is claimed anywhere
# (`approvals.firing_stopped`), so a run on another replica is waited for this long only.
# Lint bounds by it the steps a `resolution_verifies: false` run takes after its change.
FIRING_WAIT = 600.0


@dataclass(frozen=True)
class Step:
    """One step of a playbook: an action, its parameters, and how it runs."""

    name: str
    action: str
    params: dict[str, Any]
    when: str | None = None
    timeout: float | None = None  # None: derived from the action (`Action.deadline`)
    retries: int = DEFAULT_RETRIES
    on_failure: str = "abort"
    approval: bool = False
    description: str = ""  # shown to whoever approves the step
    target: Target | None = None  # the object it changes, when not the playbook's


@dataclass(frozen=True)
class Target:
    """The object a playbook (or one step) acts on (templates); the unit of locks,
    cooldowns, rate limits."""

    kind: str
    name: str
    namespace: str = ""


def build_target(data: dict[str, Any] | None) -> Target | None:
    return _built(Target, kind=data["kind"], name=data["name"],
                  namespace=data.get("namespace", "")) if data else None


@dataclass(frozen=True)
class Escalation:
    """Whom a playbook's note goes to, how urgently, and when it is raised."""

    severity: str = "warning"
    respond_within: float | None = None
    owner: str = ""
    team: str = ""  # routable: the Alertmanager sink's `team` label
    summary: str = ""
    always: bool = False
    next_steps: tuple[str, ...] = ()
    sinks: tuple[str, ...] = ()
    # (severity, `when` expression, respond_within or None, team or ""): the first that
    # holds wins.
    raise_to: tuple[tuple[str, str, float | None, str], ...] = ()


@dataclass(frozen=True)
class Playbook:
    """A validated playbook: what it matches and what it does."""

    name: str
    file: str
    order: int
    alertnames: tuple[str, ...]
    matchers: tuple[Matcher, ...] = ()
    status: str = "firing"
    continue_: bool = False
    dry_run: bool = False
    description: str = ""
    runbook: str = ""
    target: Target | None = None
    guards: dict[str, Any] = field(default_factory=dict)
    # Defaults by factory, which leaves no class attribute: a built playbook makes these
    # three when first asked for (`__getattr__`), and a class attribute would answer first.
    steps: tuple[Step, ...] = field(default_factory=tuple)
    on_resolved: tuple[Step, ...] = field(default_factory=tuple)
    # "changed": on_resolved reverts only what the firing run changed; "always": regardless.
    on_resolved_when: str = "changed"
    # False: the alert's resolution while the firing run waits is not its verification (its
    # waits run on and decide): an alert that clears before the fix is seen to complete.
    resolution_verifies: bool = True
    escalation: Escalation | None = field(default_factory=lambda: None)

    def matches(self, labels: dict[str, str], status: str) -> bool:
        # A firing playbook also sees its alert's resolution: it records it, cancels what is
        # pending, and runs `on_resolved`. A resolved-only playbook never sees firing alerts.
        if self.status == "resolved" and status == "firing":
            return False
        return labels.get("alertname") in self.alertnames and all(
            m.matches(labels) for m in self.matchers
        )

    def __getattr__(self, name: str) -> Any:
        # Called only for what the instance does not hold: a built playbook's steps,
        # `on_resolved` and escalation until first asked for (`build_playbook`).
        later = self.__dict__.get("_later")
        if later is None or name not in LATER:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        self.__dict__.update(_build_later(*(later() if callable(later) else later)))
        del self.__dict__["_later"]
        return self.__dict__[name]

    def steps_for(self, status: str) -> tuple[Step, ...]:
        if status == "resolved" and self.status == "firing":
            return self.on_resolved
        return self.steps


Later = tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any] | None]


def build_playbook(data: dict[str, Any], file: str, order: int,
                   later: Callable[[], Later] | None = None) -> Playbook:
    """`later`: where its steps, `on_resolved` and escalation are found when first asked for,
    if not in `data` (the parse cache keeps them packed: `parse_cache.unpacked`)."""
    match = data["match"]
    names = match["alertname"]
    return _built(
        Playbook,
        name=data["name"],
        file=file,
        order=order,
        alertnames=tuple([names] if isinstance(names, str) else names),
        matchers=tuple(parse_matcher(m) for m in match.get("matchers", [])),
        status=match.get("status", "firing"),
        continue_=data.get("continue", False),
        dry_run=data.get("dry_run", False),
        description=data.get("description", ""),
        runbook=data.get("runbook", ""),
        target=build_target(data.get("target")),
        guards=data.get("guards", {}),
        on_resolved_when=data.get("on_resolved_when", "changed"),
        resolution_verifies=data.get("resolution_verifies", True),
        # Only what they are made from is kept (the rest of the playbook's data is let go:
        # fewer objects for the collection before the freeze to walk).
        _later=later or (data.get("steps", []), data.get("on_resolved", []),
                         data.get("escalation")),
    )


# Built when first asked for: matching a rule set (and checking it across files) needs none
# of them, and most playbooks of a large one never see an alert (2 000 playbooks' steps and
# escalations were half of building them, 10-15 ms of every start-up).
LATER = ("steps", "on_resolved", "escalation")


def _build_later(steps: list[dict[str, Any]], on_resolved: list[dict[str, Any]],
                 esc: dict[str, Any] | None) -> dict[str, Any]:
    return dict(
        steps=tuple(build_step(s) for s in steps),
        on_resolved=tuple(build_step(s) for s in on_resolved),
        escalation=_built(
            Escalation,
            severity=esc.get("severity", "warning"),
            respond_within=parse_duration(esc["respond_within"]) if "respond_within" in esc
            else None,
            owner=esc.get("owner", ""),
            team=esc.get("team", ""),
            summary=esc.get("summary", ""),
            always=esc.get("always", False),
            next_steps=tuple(esc.get("next_steps", [])),
            sinks=tuple(esc.get("sinks", [])),
            raise_to=tuple((r["severity"], r["when"], parse_duration(r["respond_within"])
                            if "respond_within" in r else None, r.get("team", ""))
                           for r in esc.get("raise", [])),
        ) if esc is not None else None,
    )


def build_step(data: dict[str, Any]) -> Step:
    return _built(
        Step,
        name=data["name"],
        action=data["action"],
        params=data.get("params", {}),
        when=data.get("when"),
        timeout=parse_duration(data["timeout"]) if "timeout" in data else None,
        retries=data.get("retries", DEFAULT_RETRIES),
        on_failure=data.get("on_failure", "abort"),
        approval=data.get("approval") == "required",
        description=data.get("description", ""),
        target=build_target(data.get("target")),
    )
