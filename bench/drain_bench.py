"""CPU per decision of processing, in-process: a storm's alerts are acknowledged first, then
the dispatcher drains them as `serve` does (dry-run, the shipped rules and production config,
log level info to a file, the collector frozen after start-up and its young passes as
`serve` makes them: `collector.young_passes`). Printed, not a test.

What is counted is this process's CPU time (all threads: the checkpointer's too) from the
first claim until the inbox is empty, divided by the decisions made, so a loaded machine
changes it far less than it changes decisions per second. Traffic is bench/storm.lua's
(storm_bench.py's label sets; 2 alerts per request; of every 10 requests 8 new, 1 retry of
the one before: duplicates, 1 resolution of the one 5 before) and, for the cost of each
kind of decision, the same alerts split by kind: matched (planned, or coalesced into a run
on the same target), no_match, resolutions. Also the mixed drain's store, its files once
closed (inbox items, decisions, references), in bytes per decision.

    python bench/drain_bench.py                    # 20 000 alerts, mixed, then by kind
    python bench/drain_bench.py --profile out.prof # cProfile of the mixed drain
    REMEDIATOR_EVENT_LOOP=asyncio python bench/drain_bench.py   # on asyncio's own loop

Counted in instructions, which a loaded machine does not move (per decision: the difference
between two sizes, e.g. 6 000 and 2 000 alerts, over the difference in decisions):

    valgrind --tool=callgrind --instr-atstart=no python bench/drain_bench.py \
        --mixed-only --alerts 6000 --callgrind
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from storm_bench import PER_REQUEST, alert_label_sets  # noqa: E402

from remediator import collector, event_loop  # noqa: E402
from remediator.alerts import parse_notification  # noqa: E402
from remediator.config import load_config  # noqa: E402
from remediator.logs import setup_logging  # noqa: E402
from remediator.service import Service  # noqa: E402
from tests.support.worker import TOKEN  # noqa: E402

CONFIG = ROOT / "deploy" / "kubernetes" / "config.yaml"
# serve's loop (uvloop where installed); REMEDIATOR_EVENT_LOOP=asyncio for Python's own
LOOP = os.environ.get("REMEDIATOR_EVENT_LOOP", "auto")


def requests(alerts: int, label_sets: list[dict[str, str]]) -> list[bytes]:
    """storm.lua's request sequence, as webhook bodies."""
    import json

    def body(n: int, status: str) -> bytes:
        labels = label_sets[n % len(label_sets)]
        ends = "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-21T11:00:00Z"
        return json.dumps({
            "version": "4", "groupKey": '{}:{alertname="bench"}', "truncatedAlerts": 0,
            "status": status, "receiver": "remediator", "groupLabels": {}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "http://alertmanager.example:9093",
            "alerts": [{"status": status, "labels": labels,
                        "annotations": {"summary": f"{labels['alertname']} summary"},
                        "startsAt": "2026-11-21T10:00:00Z", "endsAt": ends,
                        "generatorURL": "http://prometheus.example/graph?g0.expr=up",
                        "fingerprint": f"{n:08x}{j:08x}"} for j in range(PER_REQUEST)]}).encode()

    out = []
    for counter in range(1, alerts // PER_REQUEST + 1):
        k = counter % 10
        out.append(body(counter - 1, "firing") if k == 7 else
                   body(counter - 5, "resolved") if k == 9 else body(counter, "firing"))
    return out


async def drain(bodies: list[bytes], tmp: Path, profile: str | None,
                trace: bool = False, callgrind: bool = False) -> dict[str, Any]:
    store = tmp / f"d{time.time_ns()}.db"
    # the webhook token is one of the secrets every output is redacted of, as in `serve`
    cfg = load_config(str(CONFIG), env={"REMEDIATOR_WEBHOOK_TOKEN": TOKEN}, secrets=False,
                      rules=[str(ROOT / "rules")], store=f"sqlite:///{store}",
                      escalation_dir=str(tmp / "notes"),
                      rules_cache="")
    cfg.escalation_default_sinks = ["files"]  # no network: the note is rendered and written
    cfg.escalation_sinks = {}
    service = Service(cfg)
    await service.start(dispatch=False)
    intake0 = time.process_time()
    accepted = duplicates = 0
    for b in bodies:
        result = await service.intake(parse_notification(b))
        accepted += result.accepted
        duplicates += result.duplicates
    intake_cpu = time.process_time() - intake0
    gc.collect()
    gc.freeze()
    collector.young_passes()  # as `serve` (its full passes are left automatic here)
    counted = Counter[str]()
    engine = service.engine
    assert engine is not None
    finish = engine.records.finish

    async def counting(decision: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        result = await finish(decision, *args, **kwargs)
        reason = result.get("reason") or ""
        counted["coalesced" if reason.startswith("locked: coalesced") else result["outcome"]] += 1
        return result

    engine.records.finish = counting  # type: ignore[method-assign]
    process = engine.process
    processed = [0]

    async def processing(item: Any) -> list[dict[str, Any]]:
        try:
            return await process(item)
        finally:
            processed[0] += 1

    engine.process = processing  # type: ignore[method-assign]
    statements: list[str] = []
    if trace:
        service.store._db.set_trace_callback(statements.append)  # type: ignore[attr-defined]
    profiler = cProfile.Profile() if profile else None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    if callgrind:  # only the drain is counted
        subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], check=True,
                       capture_output=True)
    task = asyncio.create_task(service._dispatch_loop())
    # Under callgrind a look at the inbox (a count of it) would be counted too, more of them
    # the slower the machine (70-250 M instructions of a 2 000-alert drain at 1 s apart; at
    # 5 s, a run that took twice as long counted ~14 k more a decision): what is counted
    # instead is the items processed, each accepted alert's once.
    while (processed[0] < accepted if callgrind else await service.store.pending_count()) \
            or service._running:
        await asyncio.sleep(1.0 if callgrind else 0.05)
    if callgrind:
        subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], check=True,
                       capture_output=True)
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    task.cancel()
    await service.stop()
    gc.unfreeze()
    decisions = sum(counted.values())
    # the store's files once closed (its WAL checkpointed), as storm_bench counts them
    stored = sum(f.stat().st_size for f in tmp.glob(store.name + "*"))
    return {"alerts": accepted, "duplicates": duplicates, "decisions": decisions,
            "bytes_per_decision": stored / max(decisions, 1),
            "cpu_us": cpu / max(decisions, 1) * 1e6, "wall": wall, "cpu": cpu,
            "intake_us": intake_cpu / max(accepted + duplicates, 1) * 1e6,
            "outcomes": dict(counted),
            "statements": Counter(" ".join(s.split()[:4]) for s in statements)}


def by_kind(bodies: list[bytes], rules_match: Any) -> dict[str, list[bytes]]:
    """The same requests split by what their alerts make: a resolution, a firing alert a
    playbook matches, one none does (a request's alerts share their labels)."""
    import json
    kinds: dict[str, list[bytes]] = {"matched": [], "no_match": [], "resolved": []}
    seen = set()
    for b in bodies:
        doc = json.loads(b)
        a = doc["alerts"][0]
        if (a["fingerprint"], a["status"]) in seen:
            continue  # the retries: duplicates, counted at intake
        seen.update((x["fingerprint"], x["status"]) for x in doc["alerts"])
        kind = ("resolved" if doc["status"] == "resolved" else
                "matched" if rules_match(a["labels"]) else "no_match")
        kinds[kind].append(b)
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=20000)
    parser.add_argument("--profile", help="write a cProfile of the mixed drain here")
    parser.add_argument("--mixed-only", action="store_true")
    parser.add_argument("--callgrind", action="store_true",
                        help="under valgrind --tool=callgrind --instr-atstart=no: count the "
                        "mixed drain only")
    parser.add_argument("--statements", action="store_true",
                        help="count the store's statements per decision (kind by kind)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        log = (tmp / "serve.log").open("w")
        setup_logging("info")
        logging.getLogger().handlers[0].setStream(log)  # type: ignore[attr-defined]
        bodies = requests(args.alerts, alert_label_sets())
        mixed = event_loop.run(drain(bodies, tmp, args.profile, callgrind=args.callgrind), LOOP)
        log.flush()
        lines = sum(1 for _ in (tmp / "serve.log").open())
        print(f"mixed storm: {mixed['alerts']} alerts acknowledged ({mixed['duplicates']} "
              f"duplicates, {mixed['intake_us']:.0f} us CPU each at intake), "
              f"{mixed['decisions']} decisions {mixed['outcomes']}")
        print(f"  processing: {mixed['cpu_us']:.0f} us CPU per decision "
              f"({mixed['decisions'] / mixed['wall']:.0f} decisions/s in {mixed['wall']:.1f} s "
              f"wall, {mixed['cpu'] / mixed['wall']:.0%} of a core); {lines} log lines; "
              f"{mixed['bytes_per_decision']:.0f} bytes of store per decision")
        if args.mixed_only:
            return
        from remediator.playbooks.validate import load_rules
        rules = load_rules([str(ROOT / "rules")], {"files", "alertmanager"})
        for kind, part in by_kind(bodies, lambda labels: rules.match(labels, "firing")).items():
            r = event_loop.run(drain(part, tmp, None, args.statements), LOOP)
            print(f"  {kind:9} {r['decisions']:6} decisions {r['outcomes']}: "
                  f"{r['cpu_us']:.0f} us CPU per decision")
            for sql, count in r["statements"].most_common():
                print(f"      {count / r['decisions']:5.2f} {sql}")


if __name__ == "__main__":
    main()
