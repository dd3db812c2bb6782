"""A decision's log line: one compact JSON object, secrets redacted, and nothing collected
for it that no format shows (the caller's frame was looked up for every record); lines on a
pipe or a file are flushed together, never lost at exit."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from remediator import logs, redact

ROOT = Path(__file__).resolve().parents[2]


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


def test_a_decisions_line_is_written_without_a_record_and_is_the_records_line(monkeypatch):
    """`logs.info` (every decision's line): with `setup_logging`'s JSON handler the only
    one it reaches, the line is written straight (counted: no LogRecord), the same line a
    record makes but for its time; with anything else set up (another handler, a filter on
    the way, the handler's level, the logger's), the record goes through logging as any."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    logs.setup_logging("info")
    out = io.StringIO()
    root.handlers[0].setStream(out)  # type: ignore[attr-defined]
    redact.remember("hunter2-secret-value")
    log = logging.getLogger("remediator.engine")
    made: list[object] = []
    real = logging.Logger.makeRecord
    monkeypatch.setattr(logging.Logger, "makeRecord",
                        lambda self, *a, **k: made.append(a) or real(self, *a, **k))
    cases = [("decision planned: locked: coalesced \u2014 http://u:hunter2-secret-value@h/?"
              "token=t", {"execution_id": "e1", "fingerprint": "f", "playbook": "p",
                          "outcome": "planned"}),
             ("decision no_match", {"execution_id": "e2", "fingerprint": "g", "playbook": None,
                                    "outcome": "no_match"}),
             ("decision failed: half \ud800", {"execution_id": "e3", "fingerprint": "h",
                                               "playbook": "q", "outcome": "failed"})]
    for message, extra in cases:
        logs.info(log, message, extra)
        log.info("%s", message, extra=extra)
    assert len(made) == len(cases)  # the records' path only
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 * len(cases)
    for straight, recorded in zip(lines[::2], lines[1::2], strict=True):
        a, b = json.loads(straight), json.loads(recorded)
        assert a.pop("ts") <= b.pop("ts") and a == b
        assert straight.partition(",")[2] == recorded.partition(",")[2]
    assert "hunter2" not in out.getvalue() and '"playbook"' not in lines[2]

    caught: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            caught.append(record)

    class Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return False

    catch, drop = Catch(), Drop()
    handler = root.handlers[0]
    # (set up, undone, a line written, records made)
    for add, remove, written, records in (
            (lambda: root.addHandler(catch), lambda: root.removeHandler(catch), True, 1),
            (lambda: log.addFilter(drop), lambda: log.removeFilter(drop), False, 1),
            (lambda: handler.setLevel(logging.WARNING), lambda: handler.setLevel(0), False, 1),
            (lambda: log.setLevel(logging.WARNING), lambda: log.setLevel(0), False, 0)):
        before, made[:] = out.getvalue(), []
        add()
        try:
            logs.info(log, "decision planned", cases[0][1])
        finally:
            remove()
        assert (out.getvalue() != before, len(made)) == (written, records)
    assert [r.getMessage() for r in caught] == ["decision planned"]
    assert caught[0].execution_id == "e1"  # type: ignore[attr-defined]


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


class _Stream(io.StringIO):
    """A stream that counts its flushes: a pipe or a file, or a terminal."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty, self.flushes, self.flushed = tty, 0, ""

    def isatty(self) -> bool:
        return self.tty

    def flush(self) -> None:
        self.flushes += 1
        self.flushed = self.getvalue()


def _lines(text: str) -> list[str]:
    return [json.loads(line)["msg"] for line in text.splitlines()]


def test_info_lines_on_a_pipe_are_flushed_together_and_a_warning_at_once(monkeypatch):
    """Counted: a line per record, but not a flush (a write(2)) per line on a pipe or a
    file; a warning is flushed at once with the lines before it, and the rest within
    FLUSH_EVERY, by the handler's thread. On a terminal every line is flushed."""
    monkeypatch.setattr(logs, "FLUSH_EVERY", 0.01, raising=False)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    logs.setup_logging("info")
    pipe, tty = _Stream(tty=False), _Stream(tty=True)
    root.handlers[0].setStream(pipe)  # type: ignore[attr-defined]
    root.addHandler(type(root.handlers[0])(tty))  # type: ignore[call-arg]
    root.handlers[1].setFormatter(logs.JsonFormatter())
    log = logging.getLogger("remediator.engine")
    try:
        for i in range(100):
            log.info("decision %d", i)
        assert pipe.flushes <= 2, pipe.flushes  # (its thread may have flushed meanwhile)
        assert tty.flushes == 100
        log.warning("store slow")
        assert _lines(pipe.flushed) == [*(f"decision {i}" for i in range(100)), "store slow"]
        log.info("after")
        deadline = time.monotonic() + 30
        while not pipe.flushed.endswith('"msg":"after"}\n') and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _lines(pipe.flushed)[-1] == "after"
    finally:
        for handler in root.handlers:
            handler.close()


class _Failing(_Stream):
    """A stream whose first flushes fail otherwise than by its reader going away."""

    def __init__(self) -> None:
        super().__init__(tty=False)
        self.failures = 2

    def flush(self) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("flush failed")
        super().flush()


def test_the_flush_thread_survives_a_failed_flush(monkeypatch, capfd):
    """The thread that flushes info lines died at a flush's first unforeseen exception:
    every later info line stayed in the buffer until a warning came. It says so once, on
    stderr, and flushes on."""
    monkeypatch.setattr(logs, "FLUSH_EVERY", 0.01, raising=False)
    stream = _Failing()
    handler = logs.LineHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    log = logging.getLogger("remediator.test_flush")
    monkeypatch.setattr(log, "handlers", [handler])
    monkeypatch.setattr(log, "propagate", False)
    monkeypatch.setattr(log, "level", logging.INFO)
    try:
        for i, failures in enumerate((1, 0)):  # a line, and its flush fails
            log.info("line %d", i)
            deadline = time.monotonic() + 30
            while stream.failures > failures and time.monotonic() < deadline:
                time.sleep(0.01)
        log.info("line 2")
        deadline = time.monotonic() + 30
        while not stream.flushed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _lines(stream.flushed) == ["line 0", "line 1", "line 2"]
    finally:
        handler.close()
    assert capfd.readouterr().err.count("cannot flush the log") == 1


def test_no_line_is_lost_when_the_process_exits(tmp_path):
    """What the buffer holds at exit is written: a clean exit, or one by an exception."""
    script = ("import logging, sys\n"
              "from remediator import logs\n"
              "logs.setup_logging('info')\n"
              "for i in range(3000):\n"
              "    logging.getLogger('remediator.engine').info('decision %d', i)\n"
              "if sys.argv[1] == 'raise':\n"
              "    raise RuntimeError('boom')\n")
    for how in ("exit", "raise"):
        done = subprocess.run([sys.executable, "-c", script, how], capture_output=True,
                              text=True, timeout=120, cwd=ROOT)
        lines = [line for line in done.stderr.splitlines() if line.startswith("{")]
        assert _lines("\n".join(lines)) == [f"decision {i}" for i in range(3000)], how
        assert ("RuntimeError: boom" in done.stderr) == (how == "raise")


def test_a_record_logged_after_logging_shut_down_is_still_written(tmp_path):
    """At interpreter exit, after logging's own exit handler flushed and closed the handler,
    asyncio still logs what it finds (a task destroyed while pending, an unclosed session):
    written as a JSON line, as before lines were buffered, not lost to a "Logging error"."""
    script = ("import asyncio, logging\n"
              "from remediator import logs\n"
              "logs.setup_logging('info')\n"
              "logging.getLogger('remediator').info('started')\n"
              "async def forever():\n"
              "    await asyncio.Event().wait()\n"
              "loop = asyncio.new_event_loop()\n"
              "task = loop.create_task(forever())\n"
              "loop.run_until_complete(asyncio.sleep(0))\n")  # exits with the task pending
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert "Logging error" not in done.stderr, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [(line["logger"], line["level"], line["msg"].split("\n")[0]) for line in lines] == [
        ("remediator", "info", "started"),
        ("asyncio", "error", "Task was destroyed but it is pending!")], done.stderr
