"""Escalation: render one note per execution and deliver it to its sinks, never dropping it.

Delivery is retried with backoff; a note a sink still refuses is spooled in the store and
redelivered by `redeliver()` (called periodically by the service and at start-up).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import orjson

from .. import graphs, markdown_text, redact
from ..actions.backends import Backends
from ..metrics import Metrics
from ..playbooks.models import Playbook
from ..store.base import Store
from .note import compile_ahead, note_for
from .sinks import NoteRefused, SinkError, build_sink

log = logging.getLogger("remediator.escalation")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Executions whose note went out and whose decision is not recorded yet, kept at most: one
# never recorded here (its claim lost, a shutdown) is forgotten past this many, and would
# only be sent again.
_UNRECORDED_MAX = 1024

__all__ = ["Escalator", "build_sink"]


def _retryable(exc: BaseException) -> bool:
    """Only a sink's own transient failure is worth another try; anything else (the note
    refused, a note that cannot be encoded, a bug) fails the same way every time."""
    return isinstance(exc, SinkError) and not isinstance(exc, NoteRefused)


def _valid_unicode(value: Any) -> Any:
    """Lone surrogates (a step result may carry one) replaced, so every sink can write it."""
    if isinstance(value, str):
        # Only a lone surrogate cannot be encoded: checked in C, not by the pattern's scan;
        # by orjson, whose UTF-8 of the text stays with it for the decision's record to use
        # (str.encode's was made again there: a note is UCS-2 for its em dashes, and each
        # conversion of its Markdown ~28 k instructions).
        try:
            orjson.dumps(value)
            return value
        except orjson.JSONEncodeError:
            return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_valid_unicode(k): _valid_unicode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_valid_unicode(v) for v in value]
    return value


def _title(markdown: str) -> str:
    """The note's first line (its title) as text, its Markdown escapes removed (a title is
    shown as it is written: a webhook's field, the console's list), without splitting all of
    it into lines: the first line ends at the first newline or before."""
    return markdown_text.unescape(markdown.partition("\n")[0].splitlines()[0].lstrip("# "))


class Escalator:
    def __init__(self, store: Store, backends: Backends, sinks: dict[str, Any],
                 default_sinks: list[str], metrics: Metrics | None = None,
                 external_url: str = "", attempts: int = 3, retry_wait: float = 0.5,
                 graph_timeout: float = 3.0):
        self.store, self.backends, self.sinks = store, backends, sinks
        self.default_sinks = default_sinks
        self.metrics, self.external_url = metrics, external_url
        self.attempts, self.retry_wait = attempts, retry_wait
        self.graph_timeout = graph_timeout  # a note waits at most this for Prometheus
        self._probed: tuple[float, str] = (-1e9, "")  # (when, problem): one probe per 30 s
        self._probe_lock = asyncio.Lock()
        # What each sink made of the note of a decision not recorded yet (execution id ->
        # (outcome or block, {sink: delivered, spooled or undeliverable})): `escalate`.
        self._unrecorded: dict[str, tuple[str, dict[str, str]]] = {}
        self._failing: set[str] = set()  # sinks a redelivery pass failed to reach, last pass

    async def compile_ahead(self, pb: Playbook | None) -> None:
        """Compile the note's templates before its first render (note.compile_ahead)."""
        await compile_ahead(pb)

    async def escalate(self, decision: dict[str, Any], pb: Playbook | None,
                       deliver: bool = True) -> dict[str, Any]:
        """Render the note, deliver it (live) and return what the decision records of it."""
        expr = graphs.alert_expr(decision["alert"].get("generatorURL", ""))
        problem = await self._prometheus_problem() if expr else ""
        severity, within, team, markdown = note_for(decision, pb, self.external_url, problem)
        if not deliver:  # recorded, never sent: only what the decision keeps is made fit to
            # show (the whole note's redaction, labels and all, was a fifth of its cost)
            markdown = _valid_unicode(redact.text(markdown))
            return {"severity": severity, "respond_within_seconds": within, "team": team,
                    "title": _title(markdown), "deliveries": {},
                    "note": markdown}
        note = _valid_unicode(redact.value({
            "id": decision["id"], "alertname": decision["alertname"],
            "playbook": decision.get("playbook"), "severity": severity, "team": team,
            "respond_within_seconds": within, "outcome": decision["outcome"],
            "reason": decision.get("reason") or "", "labels": decision["alert"]["labels"],
            "title": _title(markdown), "markdown": markdown,
            "graph_url": graphs.graph_url(self.external_url, decision["id"])
            if expr and self.external_url and not problem else "",
        }))
        names = list(pb.escalation.sinks) if pb and pb.escalation and pb.escalation.sinks \
            else self.default_sinks
        # A decision whose record failed is decided again, with backoff, until it is recorded
        # (`Service._process`): each attempt paged again, once a minute, where a receiver
        # without an idempotency key (Slack, a pager) cannot drop the repeats. So a sink that
        # took the note of this execution's outcome (or spooled it, which redelivers it, or
        # refused it for good) is not handed it again until that record is written
        # (`recorded`): the same outcome, for its reason may be worded otherwise at the next
        # attempt (an interrupted change, then the failure read back from its journal). A sink
        # that neither took nor spooled it (the spool's write failed too) is tried again.
        # A block is news at another guard or step too: `blocked` by a pause, then at an
        # approval once resumed, is the approval's only request (remembered by outcome alone,
        # it was never sent, and the approval expired unasked).
        said = decision["outcome"] if decision["outcome"] != "blocked" else (
            f"blocked {decision.get('blocked_step')!r} "
            + (decision.get("reason") or "").partition(":")[0])
        sent = self._unrecorded.get(decision["id"])
        if sent is None or sent[0] != said:  # news: another outcome, or another block
            if len(self._unrecorded) >= _UNRECORDED_MAX:
                del self._unrecorded[next(iter(self._unrecorded))]
            sent = self._unrecorded[decision["id"]] = (said, {})
        deliveries = sent[1]
        for name in names:
            if name not in deliveries:
                deliveries[name] = await self._deliver(name, note)
        deliveries = {name: deliveries[name] for name in names}
        return {"severity": severity, "respond_within_seconds": within, "team": team,
                "title": note["title"], "deliveries": deliveries, "note": note["markdown"]}

    def recorded(self, execution_id: str) -> None:
        """The decision whose note went out is recorded: a later note of its execution (an
        approval's outcome) is news. Not across a restart: an execution whose record never
        was is decided again, and its note sent again once, under the same idempotency key,
        as after a crash between a sink's acceptance and the record."""
        self._unrecorded.pop(execution_id, None)

    async def _prometheus_problem(self) -> str:
        """Whether Prometheus answers, so a note can say plainly that its graph cannot be
        had; checked at most every 30 s, so a storm of notes does not wait on it."""
        at, problem = self._probed
        if time.monotonic() - at <= 30:  # known: the lock (three coroutines) only to probe
            return problem
        async with self._probe_lock:
            at, problem = self._probed
            if time.monotonic() - at > 30:
                problem = await graphs.probe(self.backends.http(), self.backends.prometheus_url,
                                             self.graph_timeout)
                self._probed = (time.monotonic(), problem)
            return problem

    async def _deliver(self, name: str, note: dict[str, Any]) -> str:
        sink = self.sinks.get(name)
        if sink is None:  # refused at load (config and rules); kept harmless regardless
            return self._refused(name, note, KeyError(f"sink {name!r} is not configured"))
        key = f"spool:{note['id']}:{name}"
        if await self.store.get_state(key) is not None:
            # A note of this execution still spooled for this sink: spooled before a restart
            # (this process's memory of it, `escalate`'s, is gone; its record was never
            # written), or before its outcome changed. Sent now as well, the receiver got
            # both, the spooled one last. Replaced by this one, the spool sends it, once.
            await self.store.put_state(key, note, durable=False)
            self._count(name, "spooled")
            return "spooled"
        # At the first note, not before serve is ready (~5 ms of start-up).
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.attempts), reraise=True,
                wait=wait_exponential(multiplier=self.retry_wait, max=10),
                retry=retry_if_exception(_retryable),
            ):
                with attempt:
                    where = await sink.deliver(note, self.backends.http())
        except Exception as exc:  # a note is never dropped: spooled, or refused and alerted on
            if not _retryable(exc):
                return self._refused(name, note, exc)
            log.warning("escalation %s not delivered to %s, spooled: %s", note["id"], name, exc,
                        extra={"execution_id": note["id"]})
            await self.store.put_state(key, note, durable=False)
            self._count(name, "spooled")
            return "spooled"
        self._count(name, "delivered")
        return f"delivered: {where}"

    async def redeliver(self, budget: float | None = None) -> int:
        """Try spooled notes once more; return how many are still waiting. A sink that
        fails is not tried again in this pass (each attempt may wait out its timeout), and
        after `budget` seconds no further note is started: they wait for the next pass."""
        spooled = await self.store.list_state("spool:")
        waiting = 0
        failed: set[str] = set()
        deadline = None if budget is None else time.monotonic() + budget
        for key, note in self._in_turn(spooled):
            name = key.rsplit(":", 1)[1]
            sink = self.sinks.get(name)
            if sink is None or name in failed or (
                    deadline is not None and time.monotonic() > deadline):
                waiting += 1
                continue
            try:
                await sink.deliver(note, self.backends.http())
            except Exception as exc:  # any failure keeps it spooled; never stops maintenance
                if not _retryable(exc):
                    self._refused(name, note, exc)
                    await self._unspool(key, note)
                    continue
                log.warning("spooled escalation %s still not delivered to %s: %s", note["id"],
                            name, exc, extra={"execution_id": note["id"]})
                failed.add(name)
                waiting += 1
                continue
            await self._unspool(key, note)
            self._count(name, "delivered")
            log.info("spooled escalation %s delivered to %s", note["id"], name,
                     extra={"execution_id": note["id"]})
        self._failing = failed
        if self.metrics:
            self.metrics.escalations_spooled.set(waiting)
        return waiting

    def _in_turn(self, spooled: dict[str, Any]) -> list[tuple[str, Any]]:
        """The spooled notes in the order a pass tries them: the sinks that failed in the
        last pass after the others (two dead sinks' timeouts spent a pass's budget before a
        sink that had recovered was reached, pass after pass), and each sink's first note
        before any sink's second."""
        turn: dict[str, int] = {}
        ranked = []
        for key, note in spooled.items():
            name = key.rsplit(":", 1)[1]
            turn[name] = turn.get(name, -1) + 1
            ranked.append((name in self._failing, turn[name], key, note))
        ranked.sort(key=lambda r: r[:3])
        return [(key, note) for *_, key, note in ranked]

    async def _unspool(self, key: str, note: dict[str, Any]) -> None:
        """The spooled `note` removed, once sent or refused, unless a newer note of its
        execution replaced it meanwhile (`_deliver`): that one is still to send. Compared
        in the removing statement: read first, a replacement by another replica between
        the read and the removal was removed with it."""
        await self.store.drop_state(key, note, durable=False)

    def _refused(self, name: str, note: dict[str, Any], exc: BaseException) -> str:
        """A note the sink can never take (it refused this very note, or the sink failed in a
        way retrying cannot change): counted, logged and alerted on (the note itself stays in
        the decision), instead of being retried forever."""
        reason = redact.text(f"{type(exc).__name__}: {exc}")[:300]
        log.error("escalation %s cannot be delivered to %s, not retried: %s", note["id"], name,
                  reason, extra={"execution_id": note["id"]})
        self._count(name, "undeliverable")
        return f"undeliverable: {reason}"

    def _count(self, sink: str, outcome: str) -> None:
        if self.metrics:
            self.metrics.child(self.metrics.escalations, sink, outcome).inc()
