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


def test_a_log_lines_time_is_utc_to_the_microsecond_and_a_lone_surrogate_still_logs():
    from datetime import UTC, datetime
    formatter = logs.JsonFormatter()
    for created in (1764460886.502847, 1764460886.9999996, 1764460887.0, 0.25):
        record = logging.LogRecord("remediator", logging.INFO, "", 0, "m", (), None)
        record.created = created
        line = json.loads(formatter.format(record))
        expected = datetime.fromtimestamp(created, UTC)
        assert abs(datetime.strptime(line["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
                   - expected).total_seconds() < 2e-6, (line["ts"], expected)
    record = logging.LogRecord("remediator", logging.INFO, "", 0, "half %s", ("\ud800",), None)
    assert "\ud800" in formatter.format(record)  # json writes it: the stream's errors= decides
