"""Where escalation notes go. Each sink is one small class with `deliver`.

A note can be delivered twice: a crash between a sink's acceptance and the store's record of
it, or a timeout after the receiver acted, makes the note go out again. Every delivery
therefore carries the execution id as its idempotency key, and what a second delivery does
depends on the receiver: the directory sink rewrites the same file; the Alertmanager sink
posts the same label set, which Alertmanager merges into the alert it already has (no second
notification); a webhook gets `Idempotency-Key` and `idempotency_key` to drop it; Slack has
no such key and shows it twice (the execution id is in the message, so humans can tell).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from .. import markdown_text, redact


class SinkError(Exception):
    """Delivery failed; the note is retried, then spooled."""


class NoteRefused(SinkError):
    """The receiver refused this note itself (400, 413, 415, 422): sending it again cannot
    help, so it is not retried; the failure is counted, logged and alerted on instead."""


# Answers that judge the note, not the receiver's state (401/403/404: fix the config, then the
# spooled note goes out).
_REFUSED = (400, 413, 415, 422)


class DirectorySink:
    """One Markdown file per execution: `<dir>/<execution id>.md` (written atomically)."""

    def __init__(self, name: str, directory: str):
        self.name = name
        self.directory = Path(directory)

    async def deliver(self, note: dict[str, Any], session: aiohttp.ClientSession) -> str:
        tmp = ""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{note['id']}.md"
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".note-")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(note["markdown"])
            os.replace(tmp, path)
            tmp = ""
        except UnicodeError as exc:
            raise NoteRefused(f"cannot encode note for {self.directory}: {exc}") from None
        except OSError as exc:
            raise SinkError(f"cannot write note to {self.directory}: {exc}") from None
        finally:
            if tmp:  # a failed write leaves no half-written temporary file behind
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        return str(path)


class WebhookSink:
    """A generic JSON webhook: the whole note and its facts as one object."""

    def __init__(self, name: str, url: str, headers: dict[str, str] | None = None):
        self.name, self.url, self.headers = name, url, headers or {}
        # The URL of a Slack or webhook receiver is itself the credential: it and the headers
        # never appear anywhere; `display` (scheme and host) stands for it.
        self.display = redact.url(url, whole=True)
        redact.remember(url, *(str(v) for v in self.headers.values()))
        redact.remember_url(url)

    def body(self, note: dict[str, Any]) -> Any:
        return {**note, "idempotency_key": note["id"]}

    async def deliver(self, note: dict[str, Any], session: aiohttp.ClientSession) -> str:
        headers = {**self.headers, "Idempotency-Key": note["id"]}
        try:
            async with session.post(self.url, json=self.body(note), headers=headers) as resp:
                if resp.status >= 300:
                    text = (await resp.text(errors="replace"))[:200]
                    error = NoteRefused if resp.status in _REFUSED else SinkError
                    raise error(f"{self.name}: {self.display} answered {resp.status}: "
                                f"{redact.text(text)}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:  # refused, reset, timed out
            raise SinkError(f"{self.name}: {self.display}: {redact.text(str(exc))}") from None
        return self.display


class SlackSink(WebhookSink):
    """A Slack-compatible incoming webhook (`{"text": …}` in mrkdwn). Slack does not
    deduplicate: the note's own `Execution:` line names the id a repeat shares."""

    def body(self, note: dict[str, Any]) -> Any:
        # Slack's mrkdwn has no backslash escapes (nor `[text](url)` links): the note's are
        # removed, so an escaped label reads as itself. Slack reads `<...>` as its own markup
        # (`<!channel>` pages the whole channel, `<https://x|text>` shows a link as any text)
        # and asks that &, < and > in text be escaped: the note quotes labels whoever pushed
        # the alert wrote.
        text = markdown_text.unescape(note["markdown"]).replace("**", "*") \
            .replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        body: dict[str, Any] = {"text": text[:39000]}
        if note.get("graph_url"):  # the graph as an image link under the message
            body["attachments"] = [{"fallback": f"Graph: {note['graph_url']}",
                                    "title": f"{note['alertname']}: graph",
                                    "title_link": note["graph_url"],
                                    "image_url": note["graph_url"]}]
        return body


class AlertmanagerSink(WebhookSink):
    """Posts a `RemediationEscalation` alert so existing routing pages the right humans:
    `team` (the playbook's escalation.team), `severity` and `respond_within` are labels,
    so Alertmanager routes by them (deploy/alertmanager/alertmanager.yml).

    Idempotent by construction: one execution's note always has the same labels (its
    `execution_id` among them), so a repeat updates the alert Alertmanager holds."""

    def __init__(self, name: str, url: str, headers: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.time):
        super().__init__(name, url.rstrip("/") + "/api/v2/alerts", headers)
        # The store's clock: a replica hours behind sent a page whose endsAt had passed,
        # which Alertmanager took as resolved and never showed.
        self.clock = clock

    def body(self, note: dict[str, Any]) -> Any:
        now = datetime.fromtimestamp(self.clock(), UTC)
        labels = {k: v for k, v in note["labels"].items()
                  if k in ("namespace", "deployment", "service", "bucket", "job", "instance")}
        labels.update(alertname="RemediationEscalation", severity=note["severity"],
                      original_alertname=note["alertname"], playbook=note["playbook"] or "",
                      execution_id=note["id"])
        if note.get("team"):
            labels["team"] = note["team"]
        if note.get("respond_within_seconds"):
            labels["respond_within"] = _duration(note["respond_within_seconds"])
        return [{
            "labels": labels,
            # A page shows its text as written: the note's escapes removed, as for Slack.
            "annotations": {"summary": note["title"],
                            "description": markdown_text.unescape(note["markdown"])[:4000],
                            "outcome": note["outcome"], "reason": note["reason"][:1000],
                            **({"graph_url": note["graph_url"]} if note.get("graph_url") else {})},
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(hours=4)).isoformat(),
        }]


def _duration(seconds: float) -> str:
    """Prometheus style, as playbooks write it: 900 -> 15m, 5400 -> 1h30m."""
    whole, out = int(seconds), ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            out += f"{whole // size}{unit}"
            whole %= size
    return out or "0s"


SINK_TYPES = {"directory": DirectorySink, "webhook": WebhookSink, "slack": SlackSink,
              "alertmanager": AlertmanagerSink}


def build_sink(name: str, spec: dict[str, Any], clock: Callable[[], float] = time.time) -> Any:
    """A sink from config: `{type: directory, path: …}` or `{type: webhook, url: …}`;
    `clock`: now on the store's clock (`Service.clock`)."""
    kind = spec.get("type", "directory")
    if kind not in SINK_TYPES:
        raise ValueError(f"escalation sink {name!r}: unknown type {kind!r} "
                         f"(one of {', '.join(SINK_TYPES)})")
    if kind == "directory":
        return DirectorySink(name, spec.get("path", "escalations"))
    if not spec.get("url"):
        raise ValueError(f"escalation sink {name!r}: url is required for type {kind}")
    if kind == "alertmanager":
        return AlertmanagerSink(name, spec["url"], spec.get("headers"), clock=clock)
    return SINK_TYPES[kind](name, spec["url"], spec.get("headers"))
