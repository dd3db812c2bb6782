"""What `serve` does before it is ready: no backend client is imported until a step uses
it, and a second start finds its rule files parsed (counts, not times: bench/storm_bench.py
times start-up)."""

from __future__ import annotations

from pathlib import Path

from tests.support.worker import WorkerProcess

ROOT = Path(__file__).resolve().parents[2]
# Imported only by the actions and sinks that use them, at their first use.
CLIENTS = ("kubernetes", "docker", "boto3", "botocore", "markdown_it")


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


def test_a_second_start_reads_the_parse_cache_beside_the_store(tmp_path):
    first = WorkerProcess(tmp_path, [str(ROOT / "rules")]).start()
    assert first.stop() == 0
    [cache] = tmp_path.glob("rules-parse-cache.*.jsonl")
    lines = cache.read_text().splitlines()
    assert len(lines) == 1 + len([f for f in (ROOT / "rules").glob("*.yaml")
                                  if not f.name.endswith("_test.yaml")])
    written = cache.stat().st_ino
    second = WorkerProcess(tmp_path, [str(ROOT / "rules")]).start()
    assert second.stop() == 0
    assert cache.stat().st_ino == written  # every file found in it: nothing written again
