"""What is stored reads back as json wrote it, whichever encoder wrote it (packing.py)."""

from __future__ import annotations

import json
import math

from remediator.store import packing


def test_what_orjson_refuses_is_written_by_json_and_reads_back_the_same():
    for value in ({"result": "half a pair \ud800"}, {"bytes": 2 ** 70}, {1: "a", "b": [2, 3.5]},
                  ["ünïcode — ok", {"nested": {"empty": {}}}]):
        assert json.loads(packing.dumps(value)) == json.loads(json.dumps(value)), value


def test_a_decision_whose_steps_hold_results_keeps_a_non_finite_value():
    """A run's journal resumed as a plan (the playbook switched to dry-run) carries its
    results into the body: a Prometheus NaN must read back NaN, not null."""
    decision = {"id": "x", "mode": "dry-run", "outcome": "planned",
                "steps": [{"name": "q", "result": {"value": float("nan")}}]}
    ref = b'{"id": "y"}'
    back = packing.unpack_ref(packing.pack_ref(packing.body_text(decision), ref), ref)
    assert math.isnan(back["steps"][0]["result"]["value"])
    plan = {**decision, "steps": [{"name": "q", "result": {}}]}
    assert packing.unpack_ref(packing.pack_ref(packing.body_text(plan), ref), ref) == plan
