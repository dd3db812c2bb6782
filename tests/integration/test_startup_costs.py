"""What `serve` does before it is ready: no backend client is imported until a step uses
it, a second start finds its rule files parsed, and the collector runs once (counts, not
times: bench/storm_bench.py times start-up)."""

from __future__ import annotations

import json
import marshal
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import DEMO_RULES, write_rules
from tests.support.payloads import alert, notification
from tests.support.worker import TOKEN, WorkerProcess

ROOT = Path(__file__).resolve().parents[2]
# Imported only by the actions and sinks that use them, at their first use.
CLIENTS = ("kubernetes", "docker", "boto3", "botocore", "markdown_it", "tenacity")
# The other commands' modules: `serve` defines their arguments, never imports them.
COMMANDS = ("remediator.lint", "remediator.lint.promql", "remediator.playtest")
# Standard modules nothing before ready needs: a graph's escaping (html's does), the
# suggestions of a refused file.
UNNEEDED = ("xml", "difflib")
# Needed by a file validated anew, or the first alert or console page: not before ready by
# a start whose files are all in the parse cache.
FIRST_USE = ("jinja2", "markupsafe", "remediator.templating.sandbox")
# The built-in actions' modules, imported when an action is first looked up (registry.py);
# `serve` imports a few of them for its own use (checks: alertmanager, prometheus).
ACTION_MODULES = tuple(f"remediator.actions.{m}" for m in (
    "core", "http", "kubernetes", "kube_pods", "kube_rollout", "kube_env", "kube_exec",
    "command", "secret_text", "s3", "s3_integrity", "evidence", "docker", "docker_exec",
    "loglines"))


def _imported(log: str) -> set[str]:
    return {line.rsplit("|", 1)[1].strip() for line in log.splitlines()
            if line.startswith("import time:") and "|" in line}


def test_serve_becomes_ready_without_importing_a_backend_client(tmp_path):
    worker = WorkerProcess(tmp_path, [str(ROOT / "rules")],
                           extra_env={"PYTHONPROFILEIMPORTTIME": "1"}).start()
    assert worker.stop() == 0
    imported = _imported(worker.log_path.read_text())
    assert {"aiohttp", "yaml", "jinja2"} <= imported  # the list is the process's own
    assert not {name for name in imported if name.split(".")[0] in CLIENTS}
    assert not imported & set(COMMANDS)
    assert not {name for name in imported if name.split(".")[0] in UNNEEDED}


def test_a_start_with_its_files_parsed_imports_jinja2_at_its_first_alert(tmp_path):
    """The first start validates the file (its templates compiled, Jinja2 imported); the
    second finds it validated, and is ready without Jinja2, the sandbox or the built-in
    actions' modules, which its first alert imports to render its templates (and plan its
    step: test_action_registry)."""
    rules = write_rules(tmp_path / "rules", DEMO_RULES)
    first = WorkerProcess(tmp_path, [str(rules)], extra_env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert first.start().stop() == 0
    assert set(FIRST_USE) <= _imported(first.log_path.read_text())
    second = WorkerProcess(tmp_path, [str(rules)],
                           extra_env={"PYTHONPROFILEIMPORTTIME": "1"}).start()
    try:
        ready = _imported(second.log_path.read_text())
        assert {"aiohttp", "yaml", "prometheus_client"} <= ready
        assert not ready & set(FIRST_USE) and not ready & set(ACTION_MODULES)
        assert "zstandard" not in ready  # the first decision's record imports it
        second.post_alerts(notification(alert("DemoDown", namespace="demo", deployment="web")))
        deadline = time.monotonic() + 15
        while not (done := second.executions(outcome="planned")):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert done[0]["target"] == "demo/deployment/web"
        assert done[0]["steps"][0]["params"]["message"] == "remediating web in demo"
    finally:
        assert second.stop() == 0
    assert {*FIRST_USE, "zstandard"} <= _imported(second.log_path.read_text())


def test_a_second_start_reads_the_parse_cache_beside_the_store(tmp_path):
    """Each file parsed and validated, kept; the second start finds every one of them."""
    first = WorkerProcess(tmp_path, [str(ROOT / "rules")]).start()
    assert first.stop() == 0
    [cache] = tmp_path.glob("rules-parse-cache.*.marshal")
    entries, _, checked = marshal.loads(cache.read_bytes().split(b"\n", 2)[2])
    assert len(entries) == len(checked) == len([f for f in (ROOT / "rules").glob("*.yaml")
                                                if not f.name.endswith("_test.yaml")])
    written = cache.stat().st_ino
    second = WorkerProcess(tmp_path, [str(ROOT / "rules")]).start()
    assert second.stop() == 0
    assert cache.stat().st_ino == written  # every file found in it: nothing written again


# `serve` up to the point it would listen, in its own interpreter; the collector's counters
# are read at each freeze: the imported modules', then what start-up built.
_COUNT_COLLECTIONS = """
import gc, json, sys
import remediator.cli as cli
from remediator.server.listener import CappedSite

seen = []
freeze = gc.freeze
def counted_freeze():
    seen.append([s["collections"] for s in gc.get_stats()])
    freeze()
gc.freeze = counted_freeze
async def instead_of_listening(site):
    from remediator import ca_bundle
    print(json.dumps({"freezes": seen, "frozen": gc.get_freeze_count(),
                      "unfrozen": len(gc.get_objects()),
                      "ca_bundle_started": ca_bundle._thread.ident is not None}))
    raise SystemExit(0)
CappedSite.start = instead_of_listening  # serve's site
sys.exit(cli.main(sys.argv[1:]))
"""


def test_start_up_collects_once_and_freezes_what_it_built(tmp_path):
    """From the imports to ready the collector runs once, the full collection before the
    freeze: not in passes over the rule set as it loads. What start-up built is then frozen,
    so a storm's full collections walk none of it."""
    (tmp_path / "c.yaml").write_text("guards: {namespaces: {allow: [shop]}}\n")
    done = subprocess.run(
        [sys.executable, "-c", _COUNT_COLLECTIONS, "serve", "--rules", str(ROOT / "rules"),
         "--store", f"sqlite:///{tmp_path}/r.db", "--config", str(tmp_path / "c.yaml")],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "REMEDIATOR_WEBHOOK_TOKEN": TOKEN, "REMEDIATOR_LOG_LEVEL": "error"})
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)
    imported, built = counts["freezes"]
    assert [b - a for a, b in zip(imported, built, strict=True)] == [0, 0, 1]  # by generation
    assert counts["unfrozen"] < counts["frozen"] // 20
    assert not counts["ca_bundle_started"]  # after ready (test_aiohttps_ca_bundle_...)


# The command line's process: aiohttp imported through remediator.ca_bundle.
_CA_BUNDLE = """
import asyncio, json, ssl
import remediator.cli
from aiohttp import connector
from remediator import ca_bundle
from remediator.actions.backends import Backends

deferred = ca_bundle._deferred == [connector._SSL_CONTEXT_VERIFIED]
deferred = deferred and ca_bundle._thread.ident is None  # nobody has started it
unverified = connector._SSL_CONTEXT_UNVERIFIED.verify_mode == ssl.CERT_NONE
async def session():
    backends = Backends()
    backends.http()
    await backends.close()
asyncio.run(session())
print(json.dumps({"deferred": deferred, "unverified": unverified,
                  "system": ssl.create_default_context().cert_store_stats(),
                  "aiohttp": connector._SSL_CONTEXT_VERIFIED.cert_store_stats()}))
"""


def test_aiohttps_ca_bundle_loads_after_start_up_and_before_any_client_session():
    """aiohttp loads the CA bundle into its two default contexts as it is imported (a tenth of
    start-up): in the command line it is loaded in a thread instead, into the verified one only
    (the other verifies nothing), started once `serve` is ready (it competed with
    start-up: test_start_up_collects_once_...) or by the first client session, which is only
    made once it trusts what a default context trusts."""
    done = subprocess.run([sys.executable, "-c", _CA_BUNDLE], capture_output=True, text=True,
                          timeout=60, check=True)
    found = json.loads(done.stdout)
    assert found["deferred"] and found["unverified"]
    assert found["system"]["x509_ca"] > 0 and found["aiohttp"] == found["system"]


def test_a_process_that_exits_while_the_ca_bundle_loads_exits_cleanly():
    """The load runs in a thread: a process that ends before it is done waits for it (OpenSSL's
    exit handlers freed what the thread still read: a segfault in about one exit in four)."""
    started = "import remediator.ca_bundle as c; c.start()"
    codes = [subprocess.run([sys.executable, "-c", started],
                            capture_output=True, timeout=60).returncode for _ in range(20)]
    assert codes == [0] * 20


def test_every_dataclass_has_its_own_docstring():
    """A dataclass without one is given its signature as a docstring when it is made
    (`inspect.signature`: 24 of them were 4-8 ms of every start-up). Checked over serve's
    modules and whatever else this process imported (the other commands' too)."""
    import dataclasses

    import remediator.cli
    import remediator.server
    import remediator.service
    import remediator.store.sqlite  # noqa: F401

    undocumented = [f"{name}.{cls.__name__}" for name, module in list(sys.modules.items())
                    if name.startswith("remediator") for cls in vars(module).values()
                    if isinstance(cls, type) and dataclasses.is_dataclass(cls)
                    and cls.__module__ == name and "__doc__" in vars(cls)
                    and (cls.__doc__ or "").startswith(f"{cls.__name__}(")]
    assert not undocumented
