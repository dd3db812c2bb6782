"""A decision's log line: one compact JSON object, secrets redacted, and nothing collected
for it that no format shows (the caller's frame was looked up for every record)."""

from __future__ import annotations

import io
import json
import logging

from remediator import logs, redact


def test_a_log_line_is_json_redacted_and_collects_no_caller_frame(monkeypatch):
    monkeypatch.setattr(logging, "_srcfile", logging._srcfile)  # restored after the test
    for name in ("logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, name, getattr(logging, name))
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    frames: list[object] = []
    real = logging.currentframe
    monkeypatch.setattr(logging, "currentframe", lambda: frames.append(1) or real())
    logs.setup_logging("info")
    out = io.StringIO()
    root.handlers[0].setStream(out)  # type: ignore[attr-defined]
    redact.remember("hunter2-secret-value")
    logging.getLogger("remediator.engine").info(
        "decision %s: %s", "failed", "http://u:hunter2-secret-value@h/ refused",
        extra={"execution_id": "e1", "outcome": "failed"})
    line = json.loads(out.getvalue())
    assert line["msg"] == "decision failed: http://<redacted>@h/ refused"
    assert line["execution_id"] == "e1" and line["level"] == "info"
    assert frames == []
