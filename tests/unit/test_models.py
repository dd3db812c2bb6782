"""Playbooks are built without their dataclasses' `__init__` (models._built), their steps and
escalation when first asked for: each object must still hold every field once asked, and
equal what the constructor makes of the same values."""

from __future__ import annotations

import dataclasses

from remediator.playbooks.models import build_playbook

FULL = {
    "name": "p", "description": "d", "runbook": "https://r", "continue": True, "dry_run": True,
    "match": {"alertname": ["A", "B"], "matchers": ['env="prod"', 'pod=~"web-.*"'],
              "status": "any"},
    "target": {"kind": "deployment", "name": "web", "namespace": "shop"},
    "guards": {"cooldown": "10m"},
    "steps": [{"name": "s", "action": "log", "params": {"message": "x"}, "when": "true",
               "timeout": "1m", "retries": 1, "on_failure": "continue", "approval": "required",
               "description": "why", "target": {"kind": "pod", "name": "w"}}],
    "on_resolved": [{"name": "r", "action": "log"}],
    "on_resolved_when": "always", "resolution_verifies": False,
    "escalation": {"severity": "critical", "respond_within": "15m", "owner": "o", "team": "t",
                   "summary": "s", "always": True, "next_steps": ["n"], "sinks": ["files"],
                   "raise": [{"severity": "page", "when": "true", "respond_within": "5m"}]},
}


def _objects(pb: object) -> list[object]:
    return [pb, pb.target, pb.escalation, *pb.steps, *pb.on_resolved,  # type: ignore[attr-defined]
            *(s.target for s in pb.steps if s.target)]  # type: ignore[attr-defined]


def test_every_built_object_holds_every_field_and_equals_its_constructed_twin() -> None:
    for data in (FULL, {"name": "q", "match": {"alertname": "A"}, "steps": [
            {"name": "s", "action": "log"}]}):
        pb = build_playbook(data, "rules.yaml", 3)
        for obj in filter(None, _objects(pb)):
            assert set(vars(obj)) == {f.name for f in dataclasses.fields(obj)}, obj
            assert dataclasses.replace(obj) == obj  # `replace` goes through `__init__`
        try:
            pb.name = "other"  # type: ignore[misc]
        except dataclasses.FrozenInstanceError:
            pass
        else:
            raise AssertionError("a built playbook must stay frozen")


def test_steps_and_escalation_are_made_once_when_first_asked_for() -> None:
    pb = build_playbook(FULL, "rules.yaml", 0)
    assert {"steps", "on_resolved", "escalation"}.isdisjoint(vars(pb))  # not made yet
    steps = pb.steps
    assert pb.steps is steps and pb.on_resolved[0].name == "r"  # made once, all together
    assert pb.escalation is not None and pb.escalation.raise_to[0][2] == 300
    assert "_later" not in vars(pb)  # the data it was made from is let go
    bare = build_playbook({"name": "q", "match": {"alertname": "A"}}, "rules.yaml", 1)
    assert bare.steps == () and bare.escalation is None
    for obj in (pb, bare):
        try:
            obj.no_such_field  # type: ignore[attr-defined]  # noqa: B018
        except AttributeError:
            pass
        else:
            raise AssertionError("only the three deferred fields are made on demand")


def test_a_stored_alert_and_group_read_back_hold_every_field_and_equal_their_twins() -> None:
    """Every decision reads its alert and group back (`from_dict`, without `__init__`, as
    playbooks are built): every field held, equal to what the constructor makes, frozen."""
    from remediator.alerts import Alert, Group

    alert = Alert("firing", {"alertname": "A"}, {"summary": "s"}, "t0", None, "http://g", "f")
    group = Group("r", "firing", "k", {"a": "1"}, {"b": "2"}, {"c": "3"}, "http://am", 2)
    for obj, read in ((alert, Alert.from_dict(alert.to_dict())),
                      (group, Group.from_dict(group.to_dict())), (Group(), Group.from_dict({}))):
        assert set(vars(read)) == {f.name for f in dataclasses.fields(read)}
        assert read == obj
        assert dataclasses.replace(read) == read
        try:
            read.status = "other"  # type: ignore[misc]
        except dataclasses.FrozenInstanceError:
            pass
        else:
            raise AssertionError("a read-back alert or group must stay frozen")
