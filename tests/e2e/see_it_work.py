"""See remediator work end to end, in under a minute: `python -m tests.e2e.see_it_work`

Starts everything on 127.0.0.1 in a temporary directory: a Kubernetes API test server with
the five systems' workloads, an S3 server (moto), a metrics exporter, a real Prometheus with
the project's alert rules (deploy/prometheus), a real Alertmanager with the project's routes
(deploy/alertmanager) and `remediator serve --mode live` with the project's playbooks (rules/).
Then it plays Code Forge's headline incident and narrates every hop:

    S3 uploads start failing → Prometheus fires CodeForgeS3UploadFailureHigh → Alertmanager
    routes it to remediator (and to the on-call) → remediator reads the pods' logs, restarts
    deployment/code-forge, waits for the rollout, verifies the failure ratio → the alert
    resolves → a duplicate delivery changes nothing.

`--system libervia` plays Libervia's PROC-001 on docker-compose instead, against a private
dockerd (Debian's docker.io, started in the temporary directory, no network changes):

    the gateway container dies → up == 0 → Prometheus fires API_DOWN → Alertmanager routes it
    to the compose remediator → the Engine confirms the container exited → remediator reads its
    logs, restarts it (docker-compose restart gateway), waits for it, verifies /health → the
    alert resolves → a duplicate delivery changes nothing.

Needs prometheus, prometheus-alertmanager and amtool on PATH and the test extras
(`bash tests/run.sh` installs all of it). `--keep` leaves the stack running afterwards, with
its URLs printed, until Ctrl-C. Timings are shortened for the demo; what exactly is
rewritten, and why, is in tests/e2e/harness.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.e2e import seed
from tests.e2e.harness import Stack, eventually
from tests.support.alertmanager import AMTOOL
from tests.support.alertmanager import BINARY as ALERTMANAGER
from tests.support.docker import start_dockerd
from tests.support.prometheus import BINARY as PROMETHEUS

ALERT = "CodeForgeS3UploadFailureHigh"
RATIO = "code_forge:s3_upload_failure_ratio:rate5m"
START = time.monotonic()


def say(who: str, text: str) -> None:
    print(f"[{time.monotonic() - START:5.1f}s] {who:<13} {text}", flush=True)


def ratio(stack: Stack) -> float | None:
    result = stack.prometheus.query(RATIO)["result"]
    return float(result[0]["value"][1]) if result else None


def say_routed(stack: Stack, alert: str) -> None:
    routed = eventually(lambda: [r["name"] for a in stack.alertmanager.alerts(alertname=alert)
                                 for r in a.get("receivers", [])], "Alertmanager to route it", 20)
    say("Alertmanager", f"routes it to {' and '.join(routed)} (deploy/alertmanager/alertmanager.yml)")


def watch_steps(stack: Stack, seen: dict[str, str], alert: str = ALERT) -> dict[str, Any] | None:
    """Print each step of the execution as it starts and ends; the decision once final."""
    found = [d for d in stack.executions(alertname=alert) if d["status"] == "firing"]
    if not found:
        return None
    decision = found[0]
    for step in decision["steps"]:
        if seen.get(step["name"]) != step["outcome"]:
            seen[step["name"]] = step["outcome"]
            say("remediator", f"step {step['name']:<8} ({step['action']}): {step['outcome']}"
                + (f" — {step['detail']}" if step.get("detail") else ""))
    return decision if decision["outcome"] != "running" else None


def play(stack: Stack) -> dict[str, Any]:
    kube = stack.kube
    stack.require_route(ALERT)
    say("you", "Code Forge's IRSA token expires: 40 % of SBOM uploads to S3 fail")
    stack.traffic.mix([(seed.UPLOADS, seed.UPLOAD_OK, 0.6), (seed.UPLOADS, seed.UPLOAD_FAILED, 0.4)])

    value = eventually(lambda: (r := ratio(stack)) is not None and r > 0.05 and r, "the ratio", 20)
    say("Prometheus", f"{RATIO} = {value:.2f} (> 0.05)")
    eventually(lambda: stack.prometheus_alert(ALERT), f"{ALERT} to fire", 20)
    say("Prometheus", f"alert {ALERT} is firing → sent to Alertmanager")
    say_routed(stack, ALERT)

    seen: dict[str, str] = {}
    stamp = None
    while stamp is None:
        watch_steps(stack, seen)
        stamp = seed.restarted_at(kube, seed.CODE_FORGE_NS, seed.CODE_FORGE)
        time.sleep(0.1)
    pods = seed.pod_names(kube, seed.CODE_FORGE_NS, seed.CODE_FORGE)
    say("Kubernetes", f"deployment/code-forge restartedAt={stamp}; pods now {', '.join(pods)}")

    eventually(lambda: watch_steps(stack, seen) or seen.get("verify") == "running", "verify", 30)
    say("you", "the new pods have fresh credentials: uploads succeed again")
    stack.traffic.mix([(seed.UPLOADS, seed.UPLOAD_OK, 1.0), (seed.UPLOADS, seed.UPLOAD_FAILED, 0.0)])
    decision = eventually(lambda: watch_steps(stack, seen), "the decision", 60)
    say("Prometheus", f"{RATIO} = {ratio(stack):.3f}; {ALERT} resolved")
    say("remediator", f"decision {decision['outcome']}: {decision['reason'] or 'all steps succeeded'}")

    resolved = stack.wait_decision(ALERT, status="resolved")
    say("remediator", f"resolution recorded (decision {resolved['id']}: {resolved['outcome']})")
    status, body = stack.redeliver(decision)
    say("you", f"POST the same notification again → HTTP {status} {json.dumps(body)}")
    firing = [d for d in stack.executions(alertname=ALERT) if d["status"] == "firing"]
    duplicates = int(stack.metric("remediator_alerts_duplicate_total"))
    still = seed.restarted_at(kube, seed.CODE_FORGE_NS, seed.CODE_FORGE)
    say("remediator", f"still {len(firing)} execution; {duplicates} duplicate delivery(ies) ignored; "
        f"deployment/code-forge restarted once (restartedAt={still})")
    logs = next(s for s in decision["steps"] if s["name"] == "logs")["result"]
    print("\nEvidence from the pods' logs (step `logs`):")
    for line in json.dumps(logs, indent=2).splitlines()[:14]:
        print("   ", line)
    return decision


def play_libervia(stack: Stack) -> dict[str, Any]:
    alert, gateway, services = "API_DOWN", seed.LIBERVIA, stack.services
    engine = stack.docker
    stack.require_route(alert)
    started = engine.api.inspect_container(gateway)["State"]["StartedAt"]
    say("you", "the Libervia gateway's node process dies (SIGKILLed on the host, as the "
               "kernel would: the Engine did not stop it)")
    engine.crash(gateway)
    services.healthy[services.LIBERVIA] = False
    say("Docker", f"{gateway}: {engine.api.inspect_container(gateway)['State']['Status']}")
    eventually(lambda: stack.prometheus_alert(alert), f"{alert} to fire", 30)
    say("Prometheus", f'up{{job="libervia-gateway"}} == 0 → alert {alert} is firing')
    say_routed(stack, alert)
    seen: dict[str, str] = {}
    while engine.api.inspect_container(gateway)["State"]["StartedAt"] == started:
        watch_steps(stack, seen, alert)
        time.sleep(0.1)
    state = engine.api.inspect_container(gateway)["State"]
    say("Docker", f"{gateway} {state['Status']} again, started at {state['StartedAt']}")
    services.healthy[services.LIBERVIA] = True
    say("you", "the restarted gateway answers /health")
    decision = eventually(lambda: watch_steps(stack, seen, alert), "the decision", 90)
    say("remediator", f"decision {decision['outcome']}: {decision['reason'] or 'all steps succeeded'}")
    resolved = stack.wait_decision(alert, status="resolved")
    say("remediator", f"resolution recorded (decision {resolved['id']}: {resolved['outcome']})")
    status, body = stack.redeliver(decision)
    say("you", f"POST the same notification again → HTTP {status} {json.dumps(body)}")
    firing = [d for d in stack.executions(alertname=alert) if d["status"] == "firing"]
    say("remediator", f"still {len(firing)} execution; {gateway} restarted once")
    steps = {s["name"]: s for s in decision["steps"]}
    print("\nEvidence (steps `state` and `logs`):")
    print("   ", json.dumps({k: steps["state"]["result"]["containers"][0][k]
                            for k in ("name", "status", "exit_code", "exit_cause",
                                      "oom_killed", "environment_withheld")}))
    for line in steps["logs"]["result"]["lines"][:6]:
        print("   ", line)
    return decision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.see_it_work", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the stack running until Ctrl-C")
    parser.add_argument("--system", choices=("code-forge", "libervia"), default="code-forge",
                        help="the incident to play (default: Code Forge's)")
    args = parser.parse_args(argv)
    missing = [b for b in (PROMETHEUS, ALERTMANAGER, AMTOOL) if not shutil.which(b)]
    if missing:
        print(f"missing {', '.join(missing)}: run `bash tests/run.sh` once (it installs them)")
        return 2
    root = Path(tempfile.mkdtemp(prefix="remediator-see-it-work-"))
    say("setup", "a private dockerd (no bridge, no iptables) for the compose systems")
    engine = start_dockerd()
    stack = Stack(root, engine, log=lambda text: say("setup", text))
    ok = False
    try:
        stack.start()
        say("setup", f"ready; everything lives in {root}")
        decision = play_libervia(stack) if args.system == "libervia" else play(stack)
        ok = True
        db = f"sqlite:///{stack.worker.root / f'remediator-{stack.worker.generation}.db'}"
        print(f"\nremediator's log:  {stack.worker.log_path}\nescalation notes:  {stack.escalation_dir}"
              f"\nthe decisions:     remediator history --store {db}"
              f"\n                   remediator show {decision['id']} --store {db}")
        if args.keep:
            print(f"\nStill running (Ctrl-C stops it):\n  remediator   {stack.worker.url}/api/v1/"
                  f"executions\n  Prometheus   {stack.prometheus.url}/alerts\n  Alertmanager "
                  f"{stack.alertmanager.url}\n  KUBECONFIG={stack.kubeconfig} kubectl get deploy -A")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
        engine.stop()
    if ok:
        where = "docker-compose" if args.system == "libervia" else "Kubernetes"
        print(f"\nOK: alert → Alertmanager → remediator → restart on {where} → Prometheus sees it "
              "fixed → resolution recorded → duplicate ignored.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
