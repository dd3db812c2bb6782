"""JSON logs, one object per line, carrying execution id and fingerprint when known.

Lines are written as they are logged and flushed together (`LineHandler`): at once on a
terminal or for a warning or worse, else within `FLUSH_EVERY` and at exit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from typing import Any

import orjson
from aiohttp.http_exceptions import HttpProcessingError

from . import redact
from .alerts import rfc3339

_EXTRA = ("execution_id", "fingerprint", "playbook", "outcome")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = _entry(record.created, record.levelname.lower(), record.name,
                       record.getMessage(), [getattr(record, key, None) for key in _EXTRA])
        if record.exc_info:
            entry["error"] = redact.text(self.formatException(record.exc_info))
        return _json(entry)


def _entry(created: float, level: str, name: str, message: str,
           extra: list[Any]) -> dict[str, Any]:
    """A line's fields (`_EXTRA`'s values in their order, None where a record has none)."""
    entry = {
        "ts": rfc3339(created),  # UTC, to the microsecond, as decisions' times
        "level": level,
        "logger": name,
        "msg": redact.text(message),
    }
    for key, value in zip(_EXTRA, extra, strict=True):
        if value is not None:
            entry[key] = value
    return entry


def _json(entry: dict[str, Any]) -> str:
    try:  # compact, and ~5x faster than json
        return orjson.dumps(entry).decode()
    except TypeError:  # a lone surrogate (orjson.JSONEncodeError)
        return json.dumps(entry, ensure_ascii=False)


def info(logger: logging.Logger, message: str, extra: dict[str, Any]) -> None:
    """`logger.info(message, extra=extra)` for the line every decision logs: the same line,
    written straight by the handler when `setup_logging`'s JSON handler on the root is the
    only one it reaches and nothing filters it. A record made and passed through logging's
    chain was ~2.3 % of a storm's processing instructions (callgrind, the line on and off),
    for a line whose every part is known here. Anything else set up (a test's capture,
    another handler, a filter) gets the record, as any line."""
    handler = _only_handler(logger) if logger.isEnabledFor(logging.INFO) else None
    if handler is None:
        logger.info("%s", message, extra=extra)
        return
    line = _json(_entry(time.time(), "info", logger.name, message,
                        [extra.get(key) for key in _EXTRA]))
    with handler.lock:  # type: ignore[union-attr]  # as Handler.handle takes it
        handler.write(line, logging.INFO, extra)


def _only_handler(logger: logging.Logger) -> LineHandler | None:
    """The root's JSON LineHandler, if it is the only handler `logger`'s lines reach and
    neither a logger on the way nor the handler filters them; else None."""
    node: logging.Logger | None = logger
    while node is not None and node.parent is not None:
        if node.handlers or node.filters or not node.propagate:
            return None
        node = node.parent
    if node is None or node.filters or len(node.handlers) != 1:
        return None
    handler = node.handlers[0]
    if (type(handler) is not LineHandler or handler.filters or handler.level > logging.INFO
            or type(handler.formatter) is not JsonFormatter):
        return None
    return handler


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact.text(super().format(record))


class _BadRequests(logging.Filter):
    """aiohttp logs a request it cannot parse at error level, with a traceback and the raw
    header line it choked on. That is the client's mistake, not the server's, and the line
    can be an `Authorization` or `Cookie` header (an operator's Basic credentials, a console
    session: secrets redaction cannot know by value). Kept as one warning naming what was
    wrong: aiohttp's message up to its first colon, never the data after it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "%s: bad HTTP request (answered %d): %s", (
                record.getMessage(), exc.code, _fault(exc))
        elif exc is not None and isinstance(exc.__cause__, HttpProcessingError):
            # A body aiohttp cannot read (its framing; its Content-Encoding was, while aiohttp
            # decoded it): once answered (a 400 if the handler read it, else whatever it
            # said), aiohttp reads the rest of it, fails again (`RequestPayloadError`) and
            # logs that as an unhandled exception.
            record.msg, record.args = "bad HTTP request body, connection closed: %s", (
                _fault(exc.__cause__),)
        else:
            return True
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _fault(exc: HttpProcessingError) -> str:
    """What precedes aiohttp's first colon names the fault; the data follows it."""
    return exc.message.partition("\n")[0].partition(":")[0][:200] or type(exc).__name__


_BAD_REQUESTS = _BadRequests()

FLUSH_EVERY = 0.2  # seconds an info line may wait in the buffer (on a pipe or a file)


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that does not flush every line on a pipe or a file: a flush per
    line, a write(2) each, was ~6 us of a storm's ~300 per decision (and woke the reader,
    a container runtime's log collector, as often). A line waits at most `FLUSH_EVERY` in
    the buffer, flushed by a thread that sleeps while nothing waits; a warning or worse is
    flushed at once, with the lines before it, and so is every line on a terminal. At exit
    `logging.shutdown` flushes it: only a process killed outright (SIGKILL, an OOM kill)
    loses its last info lines, the decisions they report being in the store."""

    def __init__(self, stream: object = None, owned: bool = False) -> None:
        super().__init__(stream)  # type: ignore[arg-type]
        self._owned = owned  # a stream opened for it, closed with it
        self._waiting = threading.Event()  # set: a line waits in the buffer
        self._flusher: threading.Thread | None = None
        self._closed = False
        self._buffered = _buffered(self.stream)

    def setStream(self, stream):  # type: ignore[no-untyped-def]
        old = super().setStream(stream)
        self._buffered, self._owned = _buffered(self.stream), False  # the old is the caller's
        return old

    def emit(self, record: logging.LogRecord) -> None:
        try:  # under the handler's lock (Handler.handle)
            self._line(self.format(record), record.levelno)
        except RecursionError:  # as logging.StreamHandler.emit
            raise
        except Exception:
            self.handleError(record)

    def write(self, line: str, level: int, extra: dict[str, Any]) -> None:
        """A line formatted already (`info`), under the handler's lock, as `emit` writes."""
        try:
            self._line(line, level)
        except RecursionError:
            raise
        except Exception:  # said as for a record (the message is in the line)
            self.handleError(logging.makeLogRecord({**extra, "msg": line, "levelno": level}))

    def _line(self, line: str, level: int) -> None:
        self.stream.write(line + self.terminator)
        if not self._buffered or level >= logging.WARNING:
            self.stream.flush()
        elif not self._waiting.is_set():
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_soon, daemon=True,
                                                 name="log-flush")
                self._flusher.start()
            self._waiting.set()

    def _flush_soon(self) -> None:
        said = False  # an unforeseen failure to flush, said once (not through logging)
        while True:
            self._waiting.wait()
            time.sleep(FLUSH_EVERY)
            if self._closed:
                return
            self._waiting.clear()  # before flushing: a line written meanwhile sets it again
            try:
                self.flush()
            except (OSError, ValueError):  # the reader went away
                pass
            except Exception as exc:  # the thread died with it, and info lines stayed unflushed
                if not said:
                    said = True
                    with contextlib.suppress(Exception):
                        sys.__stderr__.write(f"remediator: cannot flush the log ({exc!r}); "
                                             "still trying\n")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._waiting.set()
        with contextlib.suppress(OSError, ValueError):  # a stream closed already
            self.flush()
            if self._owned:
                with self.lock:  # type: ignore[union-attr]
                    self.stream.close()
        # A record logged after this (at exit, past logging's own exit handler: asyncio's
        # task destroyed while pending, an unclosed session) is still written, line by line:
        # to stderr itself where the stream closed was the handler's own.
        with self.lock:  # type: ignore[union-attr]
            self._buffered = False
            if self._owned:
                self.stream, self._owned = sys.stderr, False
        super().close()


def _buffered(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return not (isatty is not None and isatty())
    except ValueError:  # closed
        return False


def _stderr() -> LineHandler:
    """A handler on stderr, through a buffer of its own when it is not a terminal (Python
    writes a non-interactive stderr through a line at a time too): a dup of its descriptor,
    closed with the handler, never stderr's own."""
    try:
        if not sys.stderr.isatty():
            return LineHandler(open(os.dup(sys.stderr.fileno()), "w",
                                    encoding=sys.stderr.encoding, errors=sys.stderr.errors,
                                    buffering=1 << 16), owned=True)
    except (AttributeError, OSError, ValueError):  # replaced (pytest's capture), or closed
        pass
    return LineHandler(sys.stderr)


def setup_logging(level: str = "info", json_format: bool = True) -> None:
    # Neither format shows where a call was made nor its thread or process: not collected
    # for every record (the logging HOWTO's "Optimization"; the caller's frame was looked up
    # for each decision's line, a third of its cost).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = _stderr()
    handler.setFormatter(JsonFormatter() if json_format else
                         TextFormatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in root.handlers:  # set up again (tests, replay): its thread and stream go
        if isinstance(old, LineHandler):
            old.close()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(_BAD_REQUESTS)  # once, however often set up


class Recurring:
    """A failure a loop meets again at every turn (a read-only database: each second's claim,
    each lease renewal), said when it starts, then once a minute with how often it recurred,
    and when it ends: a traceback every second buried everything else in the log."""

    def __init__(self, logger: logging.Logger, what: str, every: float = 60.0):
        self.logger, self.what, self.every = logger, what, every
        self._since: float | None = None  # monotonic time of the first failure in a row
        self._said, self._count = 0.0, 0

    def failed(self, exc: BaseException, detail: bool = True) -> None:
        """Another failure; `detail`: with its traceback (an unforeseen error)."""
        now = time.monotonic()
        self._count += 1
        if self._since is None:
            self._since = self._said = now
            self.logger.error("%s: %s", self.what, exc, exc_info=exc if detail else None)
        elif now - self._said >= self.every:
            self._said = now
            self.logger.error("%s, still (%d times in %.0fs): %s", self.what, self._count,
                              now - self._since, exc)

    def succeeded(self) -> None:
        if self._since is not None:
            self.logger.warning("%s: recovered after %d failure(s) in %.0fs", self.what,
                                self._count, time.monotonic() - self._since)
            self._since, self._count = None, 0
