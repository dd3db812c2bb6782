"""What is stored reads back as json wrote it, whichever encoder wrote it (packing.py)."""

from __future__ import annotations

import json
import math
import threading
import zlib

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
    refs, ref = packing.Refs(), packing.Ref(1, 0.0, b'{"id": "y"}')
    back = packing.unpack_ref(refs.pack(packing.body_text(decision), ref), ref.data)
    assert math.isnan(back["steps"][0]["result"]["value"])
    plan = {**decision, "steps": [{"name": "q", "result": {}}]}
    assert packing.unpack_ref(refs.pack(packing.body_text(plan), ref), ref.data) == plan


def _decision(n: int) -> dict:
    """A routine decision as the storm bench makes them: mostly its playbook's boilerplate."""
    note = "\n".join(f"- step {i}: restart the pods of deployment web in namespace prod, "
                     f"then verify the rollout within {i * 30} seconds" for i in range(40))
    return {"id": f"{n:020x}", "mode": "dry-run", "outcome": "planned", "playbook": "restart",
            "alertname": "KubePodCrashLooping", "fingerprint": f"{n:016x}",
            "labels": {"namespace": "prod", "pod": f"web-{n}", "team": "payments"},
            "created_at": f"2026-11-30T03:00:{n % 60:02d}.000000Z",
            "steps": [{"name": f"s{i}", "action": "log", "description": f"log web-{n} {i}"}
                      for i in range(8)],
            "escalation": {"severity": "warning", "note": f"# web-{n} crash looping\n{note}"}}


def test_a_body_reads_back_against_a_reference_as_long_as_one_is_kept():
    """Whichever way it was packed: a decision's Zstandard frame, or a zlib stream (an inbox
    item's, and a decision's before the frames): the reader tells them by their first bytes."""
    ref = packing.body_text(_decision(0))
    long_ref = (ref * 8)[:packing._REF_MAX]
    long_text = packing.body_text({**_decision(2), "extra": [_decision(i) for i in range(9)]})
    for r in (ref, long_ref):
        for text in (packing.body_text(_decision(1)), long_text):
            framed = packing.Refs().pack(text, packing.Ref(1, 0.0, r))
            assert framed[:4] == b"\x28\xb5\x2f\xfd"
            assert packing.unpack_ref(framed, r) == json.loads(text)
            assert packing.unpack_ref(packing.pack_ref(text, r), r) == json.loads(text)


def test_a_reference_is_digested_once_for_the_decisions_packed_against_it(monkeypatch):
    """zlib set its preset dictionary up again for every decision (~16 % of a storm's
    instructions per decision): a reference is digested when first used, then kept with it,
    for the `_PACKERS` references used last (memory: ~110 KiB each)."""
    import zstandard
    made: list[object] = []
    real = zstandard.ZstdCompressor
    monkeypatch.setattr(zstandard, "ZstdCompressor", lambda *a, **k: made.append(a) or real(*a, **k))
    refs = packing.Refs()
    texts = [packing.body_text(_decision(n)) for n in range(6)]
    ref = refs.for_body(_decision(0), texts[0])
    packed = [refs.pack(text, ref) for text in texts]
    assert len(made) == 1
    assert [packing.unpack_ref(p, ref.data) for p in packed] == [json.loads(t) for t in texts]
    assert sum(map(len, packed)) < sum(map(len, texts)) / 10  # mostly its reference's text
    # as many other kinds as are kept: the first is digested again when next used, once
    others = [refs.for_body({**_decision(n), "playbook": f"p{n}"}, texts[1])
              for n in range(packing._PACKERS)]
    for other in others:
        refs.pack(texts[1], other)
    assert len(made) == 1 + packing._PACKERS and ref.packer is None
    assert sum(r.packer is not None for r in others) == packing._PACKERS
    assert packing.unpack_ref(refs.pack(texts[2], ref), ref.data) == json.loads(texts[2])
    assert refs.pack(texts[3], ref) and len(made) == 2 + packing._PACKERS
    assert others[0].packer is None  # the least recently used made way


def test_an_items_reference_is_set_up_once_and_its_items_packed_as_before(monkeypatch):
    """zlib set an inbox item's reference up as its preset dictionary again for every alert
    (~16 k instructions, a compressor's copy ~3 k): it is primed once, for the `_PRIMED`
    references used last, and an item packed from a copy is the same bytes (what a replica
    of the version before reads)."""
    made: list[object] = []
    real = zlib.compressobj
    monkeypatch.setattr(zlib, "compressobj", lambda *a, **k: made.append(a) or real(*a, **k))
    group = {"receiver": "r", "status": "firing", "groupLabels": {}}
    rows = [(f"k{n}", {"labels": {"alertname": "WebDown", "pod": f"web-{n}"},
                       "fingerprint": f"{n * 7919:016x}"}, group) for n in range(6)]
    texts = packing.item_texts(rows)
    refs = packing.Refs()
    ref = refs.for_alert(rows[0][1], texts[0])
    packed = [refs.pack_item(text, ref) for text in texts]
    assert len(made) == 1
    assert packed == [packing.pack_ref(text, ref.data) for text in texts]
    assert [packing.unpack_item(p, "", ref.data) for p in packed] == [r[1:] for r in rows]
    made.clear()
    others = [refs.for_alert({"labels": {"alertname": f"A{n}"}}, texts[1])
              for n in range(packing._PRIMED)]
    for other in others:
        refs.pack_item(texts[1], other)
    assert len(made) == packing._PRIMED and ref.primed is None  # the least recently used
    again = refs.pack_item(texts[2], ref)
    assert len(made) == packing._PRIMED + 1 and again == packing.pack_ref(texts[2], ref.data)
    long_text = texts[3] + b" " * 2048  # past a small item's window: packed as before
    assert refs.pack_item(long_text, ref) == packing.pack_ref(long_text, ref.data)


def test_an_inbox_item_is_read_by_orjson_and_what_it_refuses_by_json(monkeypatch):
    """A claimed item is decoded by orjson (json took twice as long, for every claimed
    alert); what orjson refuses is read by json, as before."""
    alert = {"labels": {"alertname": "WebDown", "pod": "wéb-1"}, "startsAt": "2026-01-01T00:00:00Z"}
    group = {"receiver": "r", "truncatedAlerts": 2 ** 63 - 1, "groupLabels": {}}
    ref = b'[{"labels": {"alertname": "WebDown"}}, {"receiver": "r"}]'
    [text] = packing.item_texts([("k", alert, group)])
    loads: list[object] = []
    real = json.loads

    def counted(*args, **kwargs):  # packing's calls only: not another test's thread still running
        if threading.get_ident() == this_thread:
            loads.append(args)
        return real(*args, **kwargs)

    this_thread = threading.get_ident()
    monkeypatch.setattr(json, "loads", counted)
    assert packing.unpack_item(packing.pack_ref(text, ref), "", ref) == (alert, group)
    assert loads == []
    odd = b'[{"labels": {"x": "half a pair \\ud800"}}, {}]'  # orjson refuses a lone surrogate
    assert packing.unpack_item(packing.pack_ref(odd, ref), "", ref) == (
        {"labels": {"x": "half a pair \ud800"}}, {})
    assert len(loads) == 1
