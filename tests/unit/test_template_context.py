"""docs/templates.md, the context the engine really passes to templates, and what lint accepts
are one set of names (issue 16, item 7): derived from a real dry-run replay and from the
validator, never from a copy of the list."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from remediator import templating
from remediator.cli import main
from remediator.playbooks import validate
from remediator.playbooks.validate import validate_paths
from remediator.templating.context import Target, make_target
from tests.support.payloads import alert, notification

DOC = (Path(__file__).parents[2] / "docs" / "templates.md").read_text(encoding="utf-8")
_ROW = re.compile(r"^\| (.+?) \| (.+?) \|", re.M)


def _section(title: str) -> str:
    return DOC.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


DOCUMENTED = {m.group(1).strip("`") for m in _ROW.finditer(_section("Names"))
              if m.group(1).startswith("`")}
EXAMPLE = yaml.safe_load(re.search(r"```yaml\n(.*?)```", _section("Example"), re.S).group(1))


def _names(ctx: dict[str, Any]) -> set[str]:
    """The names a context offers, written as the doc writes them (`labels.<name>`)."""
    found = set()
    for root, value in ctx.items():
        found.add(root)
        if root in ("labels", "annotations"):  # open maps: any key the alert carries
            found.add(f"{root}.<name>")
        elif root == "steps":
            found |= {f"steps.<step>.{key}" for view in value.values() for key in view}
        elif isinstance(value, Target):
            found |= {f"target.{a}" for a, v in vars(Target).items() if isinstance(v, property)}
        elif isinstance(value, dict):
            found |= {f"{root}.{key}" for key in value}
    return found


def _replay(tmp_path: Path, playbook: dict[str, Any], monkeypatch) -> set[str]:
    """A real in-process `remediator replay` (dry-run) of one alert; the names of every
    context a template was rendered or evaluated with."""
    seen: set[str] = set()
    render, evaluate = templating.render, templating.evaluate

    def spy_render(text: str, context: dict[str, Any], *env: Any, **how: Any) -> str:
        seen.update(_names(context))
        return render(text, context, *env, **how)

    def spy_evaluate(expression: str, context: dict[str, Any]) -> bool:
        seen.update(_names(context))
        return evaluate(expression, context)

    monkeypatch.setattr(templating, "render", spy_render)
    monkeypatch.setattr(templating, "evaluate", spy_evaluate)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"playbooks": [playbook]}))
    (tmp_path / "payload.json").write_text(json.dumps(notification(alert(
        "KubePodCrashLooping", namespace="shop", deployment="cart"))))
    monkeypatch.chdir(tmp_path)
    assert main(["replay", "payload.json", "--rules", "rules.yaml", "--format", "json"]) == 0
    return seen


def test_the_documented_names_are_the_names_the_engine_passes(tmp_path, monkeypatch, capsys):
    playbook = {**EXAMPLE["playbooks"][0]}
    playbook["escalation"] = {**playbook["escalation"], "always": True}  # render the note too
    seen = _replay(tmp_path, playbook, monkeypatch)
    [decision] = json.loads(capsys.readouterr().out)
    assert decision["outcome"] == "planned" and decision["escalation"]["title"].startswith(
        "[WARNING] KubePodCrashLooping: cart crash-looping in shop"), decision
    assert seen == DOCUMENTED


def test_every_documented_name_passes_lint_and_renders(tmp_path, monkeypatch, capsys):
    reads = " ".join("{{ " + name.replace("labels.<name>", "labels.namespace")
                     .replace("annotations.<name>", "annotations.summary")
                     .replace("<step>", "first") + " }}" for name in sorted(DOCUMENTED))
    playbook = {"name": "reads-everything", "match": {"alertname": "KubePodCrashLooping"},
                "target": {"kind": "deployment", "namespace": "{{ labels.namespace }}",
                           "name": "{{ labels.deployment }}"},
                "steps": [{"name": "first", "action": "log", "params": {"message": "x"}},
                          {"name": "second", "action": "log", "params": {"message": reads}}]}
    (tmp_path / "lint.yaml").write_text(yaml.safe_dump({"playbooks": [playbook]}))
    assert validate_paths([str(tmp_path / "lint.yaml")]).problems == []
    _replay(tmp_path, playbook, monkeypatch)
    [decision] = json.loads(capsys.readouterr().out)
    second = decision["steps"][1]
    assert second["outcome"] == "planned", second["detail"]
    assert second["params"]["message"].endswith("shop/deployment/cart deployment cart shop")


@pytest.mark.parametrize("name", sorted(n for n in DOCUMENTED if n.count(".") == 1
                                        and "<" not in n))
def test_lint_refuses_a_misspelt_attribute_of_every_fixed_name(tmp_path, name):
    playbook = {"name": "typo", "match": {"alertname": "A"},
                "target": {"kind": "deployment", "namespace": "shop", "name": "cart"},
                "steps": [{"name": "say", "action": "log",
                           "params": {"message": "{{ " + name + "x }}"}}]}
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({"playbooks": [playbook]}))
    [problem] = validate_paths([str(tmp_path / "typo.yaml")]).problems
    assert f"template reads {name}x, which does not exist" in problem.message
    assert f"did you mean '{name.split('.')[1]}'?" in problem.message


def test_the_documented_places_are_what_lint_allows():
    rows = {m.group(1).split("`")[1]: set(re.findall(r"`(\w+)`", m.group(2)))
            for m in _ROW.finditer(_section("Where each name can be used"))
            if "`" in m.group(1)}
    assert rows == {"params": validate.STEP_ROOTS, "target": validate.TARGET_ROOTS,
                    "guards.precondition.promql": validate.PROMQL_ROOTS,
                    "guards.rate_limit.key": validate.RATE_KEY_ROOTS,
                    "escalation": templating.ROOTS}


def test_target_is_its_old_string_with_parts():
    assert templating.render("{{ target }} {{ target.kind }}|{{ target.namespace }}|"
                             "{{ target.name }} {{ target == 'shop/deployment/cart' }}",
                             {"target": make_target("deployment", "shop", "cart")}) \
        == "shop/deployment/cart deployment|shop|cart True"
    bucket = make_target("bucket", "", "backups")
    assert (bucket, bucket.kind, bucket.namespace, bucket.name) == \
        ("bucket/backups", "bucket", "", "backups")
    assert json.dumps({"target": bucket}) == '{"target": "bucket/backups"}'
    for hostile in ("{{ target * 100000000 }}", "{{ target.center(100000000) }}",
                    "{{ target.__class__ }}", "{{ target.kind.__class__.__mro__ }}"):
        with pytest.raises(templating.TemplateError, match="refused by the sandbox"):
            templating.render(hostile, {"target": bucket})


def test_a_context_is_built_without_making_a_group(monkeypatch):
    """Every decision builds two contexts (its steps' and its note's); a Group made and
    converted for its defaults was half of the cost. The group's missing fields still get
    their defaults, a fresh map each (counted: Group constructions)."""
    from remediator import alerts
    from remediator.templating import context as template_context

    made: list[object] = []
    real = alerts.Group.__init__
    monkeypatch.setattr(alerts.Group, "__init__",
                        lambda self, *a, **k: (made.append(a), real(self, *a, **k))[1])
    labels = {"labels": {"alertname": "X"}, "annotations": {}}
    one = template_context.build(labels, {"receiver": "r"}, None)
    other = template_context.build(labels, None, None)
    assert made == []
    monkeypatch.undo()
    assert one["group"] == {**alerts.Group().to_dict(), "receiver": "r"}
    assert other["group"] == alerts.Group().to_dict()
    assert one["group"]["commonLabels"] is not other["group"]["commonLabels"]


def test_a_context_holds_what_each_roots_maker_makes():
    """`build` makes the roots without calling `ROOT_MAKERS` (a note's context makes only
    those it reads, with them): both make the same, in the same order, for a stored group,
    a partial one, none, and a target or none."""
    from remediator import alerts
    from remediator.templating import context as template_context

    class Pb:
        name, runbook = "pb", "https://runbook"

    alert = {"labels": {"alertname": "X", "a": "1"}, "annotations": {"summary": "s"},
             "fingerprint": "f", "status": "firing", "startsAt": "t"}
    stored = alerts.Group(receiver="r", group_labels={"g": "1"}).to_dict()
    for group, pb, target in ((stored, Pb(), "ns/deployment/web"), ({"receiver": "r"}, None, None),
                              (None, Pb(), None), (dict(reversed(stored.items())), None, "a/b")):
        built = template_context.build(alert, group, pb, target)
        made = {name: make(alert, group or {}, pb, target)
                for name, make in template_context.ROOT_MAKERS.items()}
        assert built == made and list(built) == list(made)
        assert list(built["group"]) == list(template_context.GROUP_FIELDS)
        assert built["labels"] is not alert["labels"]


def test_a_planned_steps_placeholders_are_made_once_per_step_name(monkeypatch):
    """Counted: a dry run's plan shows each planned step as placeholders; those of a step of
    the same name are the same for every decision, made once (three per step per decision
    before)."""
    from remediator.templating import context as template_context

    made: list[object] = []
    real = templating.Pending.__init__
    monkeypatch.setattr(templating.Pending, "__init__",
                        lambda self, path: (made.append(path), real(self, path))[1])
    views = [template_context.step_view({"name": "once-a-name", "outcome": "planned"})
             for _ in range(3)]
    assert len(made) == 3 and all(view is views[0] for view in views)
    assert {k: str(v) for k, v in views[0].items()} == {
        k: f"\u27e8steps.once-a-name.{k}\u27e9" for k in ("outcome", "result", "detail")}
