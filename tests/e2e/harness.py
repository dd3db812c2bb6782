"""The end-to-end stack: the project's own alert rules, routes and playbooks, on real peers.

    exporter ──scrape 1s──▶ Prometheus (deploy/prometheus/*.rules.yml) ──▶ Alertmanager
    (deploy/alertmanager/alertmanager.yml) ──webhook──▶ `remediator serve --mode live` (rules/)
    ──▶ Kubernetes API test server (pods/exec runs real processes), a real Docker Engine
    (Libervia's and 3dPot's compose containers), moto S3 behind a fault proxy, Service doubles
    (peers.py); notes in a temp dir

Everything listens on 127.0.0.1. What is rewritten for the test, and why (nothing else is):

* **Alert rules**: every `for:` becomes `1s` (minutes would make a test wait minutes; 1s
  still needs two consecutive evaluations). Expressions, thresholds, labels, annotations and
  range windows (`[5m]`, `[10m]`, `[1h]`) are untouched. A rate over a fresh series works
  after two 1s scrapes, but a 5-minute window remembers the past for 5 minutes, so the
  harness drives counters through `Traffic`: each phase ("failing", "fixed") runs at a rate
  that outweighs everything the series counted before, so a ratio follows the new mix
  within a second or two, whatever the window. Rule files are loaded only once every
  target has been scraped, so `absent(up{job=...})` rules do not fire at start-up.
* **Prometheus**: `scrape_interval`/`evaluation_interval` 1s; the systems' metrics come
  from one exporter scraped with `honor_labels` (each series carries the `job` the rules
  select, e.g. `3dpot-backend`); `up{job="hackathon-file-processor"}` from a second job on
  the same exporter (samples dropped), `up{job="libervia-gateway"}` from the gateway's double,
  `up{job="remediator"}` from the worker itself.
* **Alertmanager**: routes and matchers are kept exactly as the project wrote them, so
  the test proves that they route. Only timings change (`group_wait` 0s, `group_interval`
  1s, `repeat_interval` 2s: Alertmanager really re-sends firing alerts every couple of
  seconds, which is what proves deduplication), the remediator receiver's URL (the worker's
  `/alerts`) and `credentials_file` (a temp token file, also the worker's
  `REMEDIATOR_WEBHOOK_TOKEN_FILE`), and every other receiver becomes a webhook to a local
  recorder (`humans`), path `/<receiver name>`. The two remediator receivers (the cluster's and
  the one next to docker-compose) both become the worker, which runs every system's rules.
* **remediator**: the project's `rules/` unchanged, `--mode live`, a config file with the
  test peers' URLs, an escalation directory in the temp dir and the Alertmanager sink (as
  shipped: notes reach the team's receiver, `humans` path `/<team>`), guards allowing the
  namespaces, the two buckets and the two compose projects; `KUBECONFIG` to the test server,
  `AWS_ENDPOINT_URL` to moto, `DOCKER_HOST` to the session's private dockerd.
  It keeps its port across restarts (Prometheus and Alertmanager keep pointing at it).
* **Cluster Services** the playbooks probe by DNS name (Libervia's and 3dPot's `/health`) are
  played by `ClusterServices`, reached through the standard `HTTP_PROXY` / `NO_PROXY`
  variables; no hosts file, no rewritten URL. (remediator's HTTP client must honour them.)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e import seed
from tests.e2e.peers import ClusterServices, Traffic, Worker
from tests.kubeapi.server import KubeAPIServer
from tests.support.alertmanager import AMTOOL, Alertmanager
from tests.support.exporter import Exporter
from tests.support.procs import LOCALHOST, free_port
from tests.support.prometheus import Prometheus
from tests.support.s3 import FAKE_ENV, UNSET_ENV, MotoServer, make_s3_client
from tests.support.s3proxy import S3FaultProxy
from tests.support.webhook import WebhookReceiver
from tests.support.worker import OPERATOR, TOKEN, VIEWER, http, operators_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = ROOT / "rules"
REMEDIATOR_RECEIVER = "remediator"
REMEDIATOR_RECEIVERS = (REMEDIATOR_RECEIVER, "remediator-compose")
TEST_FOR = "1s"
TEST_TIMINGS = {"group_wait": "0s", "group_interval": "1s", "repeat_interval": "2s"}

T = TypeVar("T")


def eventually(fn: Callable[[], T], what: str, timeout: float = 30.0, interval: float = 0.1,
               why: Callable[[], str] | None = None) -> T:
    """Poll `fn` until it returns something truthy; fail naming `what` (and `why()`)."""
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}"
                                 + (f"\n{why()}" if why else ""))
        time.sleep(interval)


# --- the rewrites ---------------------------------------------------------------------------

def rewrite_alert_rules(text: str) -> str:
    """A rule file with every `for:` shortened to TEST_FOR; nothing else changes."""
    data = yaml.safe_load(text)
    for group in data.get("groups", []):
        for rule in group.get("rules", []):
            if "for" in rule:
                rule["for"] = TEST_FOR
    return yaml.safe_dump(data, sort_keys=False)


def rewrite_alertmanager(text: str, *, remediator_url: str, token_file: Path,
                         humans_url: str, route_also: Iterable[str] = ()) -> str:
    """The project's Alertmanager config with test timings and local receivers, same routes.

    `route_also` (a development aid, empty in the tests) adds a first route sending these
    alert names to remediator too, for trying a scenario before deploy/ routes its alert.
    """
    data = yaml.safe_load(text)
    if names := sorted(set(route_also)):
        data["route"].setdefault("routes", []).insert(0, {
            "receiver": REMEDIATOR_RECEIVER, "continue": True, "group_by": ["alertname", "namespace"],
            "matchers": [f'alertname=~"{"|".join(names)}"']})

    def retime(route: dict[str, Any], root: bool) -> None:
        for key, value in TEST_TIMINGS.items():
            if root or key in route:
                route[key] = value
        for child in route.get("routes") or []:
            retime(child, False)

    retime(data["route"], True)
    for receiver in data.get("receivers", []):
        if receiver["name"] in REMEDIATOR_RECEIVERS:
            for hook in receiver.get("webhook_configs", []):
                hook["url"] = remediator_url
                auth = hook.setdefault("http_config", {}).setdefault("authorization", {})
                auth["credentials_file"] = str(token_file)
            continue
        for key in [k for k in receiver if k.endswith("_configs")]:
            del receiver[key]
        receiver["webhook_configs"] = [{"url": f"{humans_url}/{receiver['name']}",
                                        "send_resolved": True}]
    return yaml.safe_dump(data, sort_keys=False)


def alert_rules() -> dict[str, list[dict[str, Any]]]:
    """The project's alerting rules by alert name (one name may have several tiers)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((DEPLOY / "prometheus").glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text()).get("groups", []):
            for rule in group.get("rules", []):
                if "alert" in rule:
                    found.setdefault(rule["alert"], []).append(rule)
    return found


def receivers_for(labels: dict[str, str], config: Path | None = None) -> list[str]:
    """`amtool config routes test`: the receivers Alertmanager picks for these labels."""
    path = config or DEPLOY / "alertmanager" / "alertmanager.yml"
    out = subprocess.run([AMTOOL, "config", "routes", "test", f"--config.file={path}",
                          *(f"{k}={v}" for k, v in labels.items())],
                         capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip().split(",")


def unrouted(alertname: str, config: Path | None = None) -> list[dict[str, str]]:
    """Label sets of `alertname`'s rules that Alertmanager (the project's config unless
    `config` is given) does not send to remediator."""
    missing = []
    for rule in alert_rules()[alertname]:
        labels = {"alertname": alertname, **rule.get("labels", {})}
        if not set(REMEDIATOR_RECEIVERS) & set(receivers_for(labels, config)):
            missing.append(labels)
    return missing


# --- the stack ------------------------------------------------------------------------------

class Stack:
    """Start with `Stack(tmp).start()`; every part is reachable as an attribute."""

    def __init__(self, root: Path, docker: Any, rules: Iterable[str | Path] = (RULES,),
                 log: Callable[[str], None] | None = None, route_also: Iterable[str] = ()) -> None:
        self.root = Path(root)
        self.docker = docker  # tests/support/docker.py's DockerEngine
        self.route_also = list(route_also)
        self.rules = [str(r) for r in rules]
        self.say = log or (lambda _msg: None)
        self.escalation_dir = self.root / "escalations"
        self.token_file = self.root / "webhook-token"
        self.kubeconfig = self.root / "kubeconfig"
        self._parts: list[Any] = []
        self.kube: KubeAPIServer
        self.moto: MotoServer
        self.s3_proxy: S3FaultProxy
        self.s3: Any
        self.exporter: Exporter
        self.traffic: Traffic
        self.services: ClusterServices
        self.humans: WebhookReceiver
        self.alertmanager: Alertmanager
        self.prometheus: Prometheus
        self.worker: Worker
        self.am_config = ""
        self.cpu_pods: list[str] = []
        self.worker_port = 0
        self.rule_files: dict[str, str] = {}

    # lifecycle

    def start(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.token_file.write_text(TOKEN + "\n")
        self.say("S3 (moto, behind a proxy that can fail like S3): versioned buckets with "
                 "checksummed SBOMs and certificates")
        self.moto = self._own(MotoServer(self._dir("moto")).start())
        self.s3_proxy = self._own(S3FaultProxy(self.moto.url).start())
        self.s3 = make_s3_client(self.moto.url)
        seed.s3(self.s3)

        self.say("Kubernetes API test server: seeding the five systems' workloads")
        self.kube = self._own(KubeAPIServer().start())
        seed.kubernetes(self.kube, s3_url=self.s3_proxy.url, media=self._dir("deltacrown-media"))
        self.kube.write_kubeconfig(self.kubeconfig)

        self.say("Docker Engine: Libervia's and 3dPot's compose containers")
        seed.docker(self.docker)

        self.exporter = self._own(Exporter().start())
        self.traffic = self._own(Traffic(self.exporter).start())
        self.cpu_pods = seed.metrics(self.traffic, self.kube)
        self.services = self._own(ClusterServices().start())
        self.humans = self._own(WebhookReceiver().start())

        worker_port = self.worker_port = free_port()
        worker_url = f"http://{LOCALHOST}:{worker_port}"
        self.say("Alertmanager: deploy/alertmanager/alertmanager.yml, test timings and receivers")
        self.am_config = rewrite_alertmanager(
            (DEPLOY / "alertmanager" / "alertmanager.yml").read_text(),
            remediator_url=f"{worker_url}/alerts", token_file=self.token_file,
            humans_url=self.humans.url.rsplit("/", 1)[0], route_also=self.route_also)
        self.alertmanager = self._own(Alertmanager(self._dir("alertmanager")).start(self.am_config))

        self.say("Prometheus: scraping the exporter, the gateway and remediator every second")
        self.prometheus = self._own(Prometheus(self._dir("prometheus")))
        self.prometheus.start(self._prometheus_config(worker_port, rules=False))

        self.say("remediator serve --mode live with the project's rules/")
        self.worker = self._own(Worker(self._dir("worker"), worker_port,
                                       self._worker_settings(worker_url), self.worker_env()))
        self.worker.start()

        self.prometheus.wait_for_targets(timeout=30)
        files = self.rule_files = {f"rules/{p.name}": rewrite_alert_rules(p.read_text())
                                   for p in sorted((DEPLOY / "prometheus").glob("*.rules.yml"))}
        self.prometheus.reload(self._prometheus_config(worker_port, rules=True), files)
        eventually(lambda: self.prometheus.rules(), "Prometheus to load the alert rules", 10)
        self.say(f"loaded {len(files)} rule files ({', '.join(sorted(files))}), `for:` -> {TEST_FOR}")

    def stop(self) -> None:
        for part in reversed(self._parts):
            with contextlib.suppress(Exception):
                part.stop()
        self._parts.clear()

    def _own(self, part: T) -> T:
        self._parts.append(part)
        return part

    def _dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def reload_prometheus(self, misconfigure_job: str = "") -> None:
        """Reload Prometheus; `misconfigure_job` scrapes a port nobody listens on (a wrong
        target after a config change): its `up` is 0 while the service is fine."""
        config = yaml.safe_load(self._prometheus_config(self.worker_port, rules=True))
        for job in config["scrape_configs"]:
            if job["job_name"] == misconfigure_job:
                job["static_configs"] = [{"targets": [f"{LOCALHOST}:{free_port()}"]}]
        self.prometheus.reload(yaml.safe_dump(config, sort_keys=False), self.rule_files)

    def _prometheus_config(self, worker_port: int, rules: bool) -> str:
        static = lambda target: [{"targets": [target]}]  # noqa: E731
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "alerting": {"alertmanagers": [{"api_version": "v2", "timeout": "2s", "static_configs":
                                            static(f"{LOCALHOST}:{self.alertmanager.port}")}]},
            "scrape_configs": [
                # The systems' own metrics; each series names the job the rules select.
                {"job_name": "exporter", "honor_labels": True,
                 "static_configs": static(self.exporter.target)},
                # Only `up` of this job matters (HackathonFileProcessorDown).
                {"job_name": "hackathon-file-processor", "static_configs": static(self.exporter.target),
                 "metric_relabel_configs": [{"source_labels": ["__name__"], "regex": ".+",
                                             "action": "drop"}]},
                {"job_name": "libervia-gateway", "static_configs": static(self.services.target)},
                {"job_name": "remediator", "static_configs": static(f"{LOCALHOST}:{worker_port}")},
            ],
        }
        if rules:
            config["rule_files"] = ["rules/*.rules.yml"]
        return yaml.safe_dump(config, sort_keys=False)

    def _worker_settings(self, worker_url: str) -> dict[str, Any]:
        return {
            "mode": "live",
            "rules": self.rules,
            "prometheus": {"url": self.prometheus.url},
            "alertmanager": {"url": self.alertmanager.url},
            "external_url": worker_url,
            # As deploy/kubernetes/config.yaml: notes on disk and, routed by team, Alertmanager.
            "escalation": {"dir": str(self.escalation_dir),
                           "sinks": {"alertmanager": {"type": "alertmanager",
                                                      "url": self.alertmanager.url}},
                           "default_sinks": ["files", "alertmanager"]},
            "guards": {"namespaces": {"allow": list(seed.NAMESPACES)},
                       "buckets": {"allow": list(seed.BUCKETS)},
                       "compose_projects": {"allow": list(seed.COMPOSE_PROJECTS)},
                       # One stack lives through every incident of the suite within the hour:
                       # the default global budget (30/h) would block the last ones. The budget
                       # itself is proven in test_flapping_and_storm.
                       "budget": {"max": 500, "window": "1h"}},
            "log_level": "debug",
            "operators": operators_config(self.root),
        }

    def worker_env(self) -> dict[str, str]:
        """What `remediator serve` needs to reach the peers (also bench/storm_bench.py's live
        storm): kubeconfig, S3 endpoint, DOCKER_HOST, the Services proxy, the token file."""
        env = {k: v for k, v in os.environ.items()
               if k not in UNSET_ENV and not k.startswith("REMEDIATOR_")}
        env.update(FAKE_ENV)
        env.update({
            "AWS_ENDPOINT_URL": self.s3_proxy.url,
            "AWS_CONFIG_FILE": str(self.root / "aws-config-absent"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.root / "aws-credentials-absent"),
            "KUBECONFIG": str(self.kubeconfig),
            "DOCKER_HOST": self.docker.host,
            "REMEDIATOR_WEBHOOK_TOKEN_FILE": str(self.token_file),
            # Cluster DNS names (http://<svc>.<ns>.svc) reach ClusterServices; all else is direct.
            "HTTP_PROXY": self.services.proxy_url, "http_proxy": self.services.proxy_url,
            "NO_PROXY": f"{LOCALHOST},localhost", "no_proxy": f"{LOCALHOST},localhost",
        })
        return env

    # routing

    def require_route(self, alertname: str) -> None:
        """Fail now, saying what to change, if the running Alertmanager can't reach remediator."""
        if missing := unrouted(alertname, self.alertmanager.config_path):
            raise AssertionError(
                f"deploy/alertmanager/alertmanager.yml does not route {alertname} to the "
                f"`{REMEDIATOR_RECEIVER}` receiver (labels {missing[0]}): add it to the remediator "
                "route's alertname matcher, or this scenario cannot reach remediator")

    # remediator's side

    def executions(self, **filters: str) -> list[dict[str, Any]]:
        query = "&".join(f"{k}={v}" for k, v in {"limit": "1000", **filters}.items())
        status, body = http("GET", f"{self.worker.url}/api/v1/executions?{query}", headers=VIEWER)
        assert status == 200, body
        return body["executions"]

    def wait_decision(self, alertname: str, *, status: str = "firing",
                      where: Callable[[dict[str, Any]], bool] = lambda d: True,
                      final: bool = True, timeout: float = 60.0) -> dict[str, Any]:
        """The newest decision for `alertname` in `status` matching `where` (final by default)."""
        def find() -> dict[str, Any] | None:
            for d in self.executions(alertname=alertname):
                if d["status"] == status and where(d) and not (final and d["outcome"] == "running"):
                    return d
            return None
        return eventually(find, f"a {status} decision for {alertname}", timeout,
                          interval=0.2, why=self.diagnostics)

    def note(self, decision: dict[str, Any], timeout: float = 10.0) -> str:
        path = self.escalation_dir / f"{decision['id']}.md"
        eventually(path.exists, f"escalation note {path}", timeout)
        return path.read_text()

    def post_alerts(self, payload: dict[str, Any]) -> tuple[int, Any]:
        return http("POST", f"{self.worker.url}/alerts", payload,
                    {"Authorization": f"Bearer {TOKEN}"})

    def redeliver(self, decision: dict[str, Any]) -> tuple[int, Any]:
        """POST the alert of `decision` again, as Alertmanager had sent it."""
        group = decision.get("group") or {}
        payload = {"version": "4", "receiver": group.get("receiver", REMEDIATOR_RECEIVER),
                   "status": decision["alert"]["status"], "groupKey": group.get("groupKey", "{}"),
                   "groupLabels": group.get("groupLabels", {}),
                   "commonLabels": group.get("commonLabels", {}),
                   "commonAnnotations": group.get("commonAnnotations", {}),
                   "externalURL": group.get("externalURL", ""), "truncatedAlerts": 0,
                   "alerts": [decision["alert"]]}
        return self.post_alerts(payload)

    def approve(self, execution_id: str) -> tuple[int, Any]:
        return http("POST", f"{self.worker.url}/api/v1/executions/{execution_id}/approve", b"",
                    OPERATOR, timeout=60)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of remediator's /metrics samples `name` whose labels include `labels`."""
        text = http("GET", f"{self.worker.url}/metrics")[1]
        return sum(s.value for family in text_string_to_metric_families(text)
                   for s in family.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    # Prometheus / Alertmanager side

    def prometheus_alert(self, alertname: str, state: str = "firing") -> list[dict[str, Any]]:
        return [a for a in self.prometheus.alerts()
                if a["labels"].get("alertname") == alertname and a["state"] == state]

    def wait_inactive(self, alertname: str, timeout: float = 30.0) -> None:
        eventually(lambda: not any(a["labels"].get("alertname") == alertname
                                   for a in self.prometheus.alerts()),
                   f"{alertname} to stop firing in Prometheus", timeout)

    def human_deliveries(self, alertname: str) -> list[Any]:
        return [d for d in self.humans.deliveries
                if any(a["labels"].get("alertname") == alertname for a in d.body.get("alerts", []))]

    def diagnostics(self) -> str:
        firing = [(a["labels"].get("alertname"), a["state"]) for a in self.prometheus.alerts()]
        return (f"Prometheus alerts: {firing}\n"
                f"Alertmanager alerts: {[a['labels'].get('alertname') for a in self.alertmanager.alerts()]}\n"
                f"--- remediator log tail ({self.worker.log_path}) ---\n{self.worker.tail(40)}")
