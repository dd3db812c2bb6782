"""The running worker: intake into the inbox, a bounded dispatcher, reload, shutdown.

`serve` and `replay` both build a Service; replay just feeds one payload and drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from . import redact, turns
from .actions.backends import Backends
from .actions.checks import precondition_check
from .alerts import DRY_RUN, Alert, Notification, dedupe_key
from .config import Config
from .engine import Engine
from .engine.executor import Executor
from .engine.slots import Slots
from .escalation import Escalator, build_sink
from .guards import APPROVAL, PENDING, Guards, circuit_open, decide_approval
from .logs import Recurring
from .metrics import Metrics
from .playbooks.index import RuleSet
from .playbooks.parse_cache import ParseCache, cache_directory
from .playbooks.validate import RulesError, load_rules
from .store import open_store
from .store.base import PAUSE, Enqueued, InboxItem, LeaseLost, StoreUnavailable

log = logging.getLogger("remediator.service")


class Undecided(Exception):
    """An offline drain (`replay`, `remediator test`) gave up on alerts it could not decide
    nor record a failure for; `decisions` are those it made meanwhile, `left` the claimed
    items it leaves undecided."""

    def __init__(self, failures: list[str], decisions: list[dict[str, Any]],
                 left: list[InboxItem] | None = None):
        super().__init__("; ".join(failures))
        self.failures, self.decisions, self.left = failures, decisions, left or []


class Resuming(Exception):
    """An approval decided and its execution resumed, still running when its answer was due:
    `decision` is the execution as recorded then; the run goes on here (or on the replica
    that took its alert over, once this one's claim lapsed)."""

    def __init__(self, decision: dict[str, Any]):
        super().__init__(f"{decision['id']}: resumed, still running")
        self.decision = decision


class Service:
    # Backoff between attempts at an alert whose processing met a store error.
    store_retry_first, store_retry_max = 1.0, 60.0
    # Attempts at such an alert in an offline drain, where nobody watches the retries: a
    # deterministic failure hung the command forever (`serve` retries for as long as it runs).
    offline_attempts = 3
    # Items claimed at once. Claiming hundreds at once made webhooks wait behind all of it
    # (intake has priority); each item now waits for processing's turn before its work, but
    # they are still read in one commit, and their tasks started in one chunk. 4 kept too
    # few chunks queued for processing's writes to share their commits (turns.py, half a
    # commit per decision); 8 fill them (a quarter).
    claim_batch = 8
    # How long an approval's HTTP answer waits for the resumed run (`approve`): a restart
    # is done well within it; a rollout's or a metric's wait after it is not.
    approval_answer_within = 5.0
    # How long readiness waits for its probe of intake's commit (`refusal`): under a
    # kubelet's default probe timeout (1 s); a probe still waiting answers from the last.
    ready_probe_wait = 0.5
    # Seconds a maintenance pass starts spooled notes for (`maintain`): past it the rest
    # wait for the next pass, so the section (and the next expiry) is never held for long.
    redelivery_budget = 15.0

    def __init__(self, config: Config, metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.time, executor: Executor | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.config = config
        self.sleep = sleep
        self.metrics = metrics or Metrics()
        self.store = open_store(config.store, config.store_sync, lease=config.store_lease,
                                password=config.store_password)
        self.store.instrument(self.metrics)
        self._local_clock = clock
        self.backends = Backends(prometheus_url=config.prometheus_url,
                                 alertmanager_url=config.alertmanager_url, clock=self.clock)
        self.sinks = {name: build_sink(name, spec, clock=self.clock)
                      for name, spec in config.sink_specs().items()}
        self.rules = RuleSet([])
        self.executor = executor or Executor()
        if self.executor.slots is None:
            self.executor.slots = Slots(config.workers, config.backend_concurrency)
        self.executor.now_iso = self.store.now_iso
        self.engine: Engine | None = None
        self.ready = False
        self._wakeup = asyncio.Event()
        # The last claim got all it asked for, so more may wait behind it: an execution
        # ending (a slot freed) looks again. Else only new work (intake's wakeup) or the
        # poll does: a claim per decision found nothing once the inbox was drained.
        self._more = True
        self._running: set[asyncio.Task[Any]] = set()
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = False
        self._pruned_at = 0.0
        # The keys of notifications that carried duplicates since the last maintenance pass
        # (a superset: SQLite counts them), whose items it marks received again (`_refresh`).
        self._resent: set[str] = set()
        self._pending_counted = -1.0  # monotonic time of the pending gauge's last count
        # Why the store refused intake's last commit (a webhook's, or readiness's probe of
        # it), None since one succeeded: what the webhook's 503 says is what readiness says.
        self.refused: str | None = None
        self._probe: asyncio.Task[None] | None = None
        self._probed = -1.0  # monotonic time readiness last started one
        self._claims = Recurring(log, "cannot claim work from the store (retried every second)")
        self._started_at = self.clock()
        self.last_reload: dict[str, Any] = {}  # {"at", "ok", "error"}: shown by the console
        self._reloading = asyncio.Lock()

    def clock(self) -> float:
        """Now, on the store's clock: what guards' windows, approvals' deadlines and records
        count on, the same on every replica of a shared store (`Store.clock_offset`)."""
        return self._local_clock() + self.store.clock_offset

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self, dispatch: bool = True, recover: bool = True) -> None:
        """Open the store, load the rules, build the engine. `recover`: this process is the
        store's worker (serve, tests), so it resumes what a previous stop interrupted; a
        replay is not, and never touches another process's work (`replay`)."""
        self.rules = self._load_rules()
        _log_findings(self.rules)
        await self.store.open()
        self._started_at = self.clock()  # on the store's clock, as the pause's time
        guards = Guards(self.store, self.config.guards, clock=self.clock, sleep=self.sleep,
                        precondition=precondition_check(self.backends))
        escalator = Escalator(self.store, self.backends, self.sinks,
                              self.config.escalation_default_sinks, self.metrics,
                              external_url=self.config.external_url,
                              graph_timeout=self.config.console_graph_timeout)
        self.engine = Engine(rules=self.rules, store=self.store, mode=self.config.mode,
                             backends=self.backends, executor=self.executor, guards=guards,
                             escalator=escalator, metrics=self.metrics, clock=self.clock)
        self.metrics.rules_loaded.set(len(self.rules))
        self.metrics.live_mode.set(1 if self.config.mode == "live" else 0)
        if recover:
            await self._recover()
        if dispatch:
            self._tasks = [asyncio.create_task(self._dispatch_loop(), name="dispatcher"),
                           asyncio.create_task(self._maintenance_loop(), name="maintenance")]
        self.ready = True

    async def _recover(self) -> None:
        assert self.engine is not None
        resumed = await self.store.release_running()
        # An execution recorded `running` is resumed from its journal even if its inbox item
        # was finished or pruned: after a restart nothing stays `running`.
        for decision in await self.store.list_executions(100_000, outcome="running"):
            alert = Alert.from_dict(decision["alert"])
            # Its playbook may be renamed or gone in this version: its alert looks for it.
            self.engine.recheck.add(alert.dedupe_key)
            await self.store.enqueue([(alert.dedupe_key, alert.to_dict(), decision.get("group")
                                       or {})])
            await self.store.requeue(alert.dedupe_key)
        if resumed:
            log.warning("resuming %d alert(s) interrupted by a previous stop", resumed)

    async def stop(self) -> None:
        """Stop taking work, let running steps finish within the grace period, close."""
        self._stopping = True
        if self.engine is not None:  # running steps finish; no change starts (`Steps.stopping`)
            self.engine.steps.stopping = True
        self.ready = False
        self._wakeup.set()
        for task in (*self._tasks, self._probe):
            if task is not None:
                task.cancel()
        # Runs started meanwhile (an approval's resume, a retry) get what is left of the
        # grace period too: a snapshot of `_running` let them run on past the store's close.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.grace_period
        while (pending := {t for t in self._running if not t.done()}) and \
                (left := deadline - loop.time()) > 0:
            await asyncio.wait(pending, timeout=left)
        if pending:
            for task in pending:
                task.cancel()  # its inbox item stays `running` and resumes after restart
            log.warning("%d execution(s) still running after the %gs grace period; they "
                        "resume after restart", len(pending), self.config.grace_period)
            await asyncio.wait(pending, timeout=5)
        await self.backends.close()
        await self.store.close()

    async def reload(self) -> str:
        """Swap in a new rule set if it is valid; otherwise keep serving the old one. The
        files are read and validated in a thread: on the loop, every webhook waited for all
        of it (1 000 files, half a second and more). One reload at a time, so the last one
        asked for is the set that stays, whichever load would have finished first."""
        async with self._reloading:
            return await self._reload()

    async def _reload(self) -> str:
        try:
            rules = await asyncio.to_thread(self._load_rules)
        except RulesError as exc:
            self.last_reload = {"at": self.clock(), "ok": False, "error": str(exc)}
            self.metrics.reloads.labels("failure").inc()
            log.error("reload refused, keeping %d playbooks: %s", len(self.rules), exc)
            raise
        self.rules = rules
        _log_findings(rules)
        if self.engine:
            self.engine.rules = rules
        self.metrics.rules_loaded.set(len(rules))
        self.metrics.reloads.labels("success").inc()
        self.last_reload = {"at": self.clock(), "ok": True, "error": ""}
        log.info("rules reloaded: %d playbooks", len(rules))
        return f"loaded {len(rules)} playbooks"

    def _load_rules(self) -> RuleSet:
        """The configured rule files, validated (RulesError if any is refused)."""
        return load_rules(self.config.rules, set(self.sinks), self._parse_cache())

    def _parse_cache(self) -> ParseCache | None:
        directory = cache_directory(self.config.rules_cache, self.config.store)
        try:
            return ParseCache(directory) if directory else None
        except OSError:  # its version cannot be told (the parser's source is unreadable)
            return None

    # --- intake and dispatch -----------------------------------------------------------

    async def intake(self, notification: Notification, claim: bool = False) -> Enqueued:
        """Its alerts into the inbox; `claim`: stored claimed by this process (`replay`)."""
        group = notification.group_data
        rows = [(dedupe_key(a["fingerprint"], a["startsAt"], a["status"]), a, group)
                for a in notification.items]
        if claim:
            result = await self.store.enqueue_claimed(rows)
        else:
            try:
                result = await self.store.enqueue(rows)
            except StoreUnavailable as exc:
                self.refused = str(exc)  # (the webhook answers 503)
                raise
            self.refused = None
        firing = sum(a["status"] == "firing" for a in notification.items)
        received = self.metrics.intake.by_status
        received["firing"] += firing
        received["resolved"] += len(rows) - firing
        if result.duplicates:
            self.metrics.alerts_duplicate.inc(result.duplicates)
            if not claim:  # (a replay runs no maintenance)
                self._resent.update(key for key, _, _ in rows)
        truncated = group["truncatedAlerts"]
        if truncated > 0:  # never sent to us: humans must know
            self.metrics.alerts_truncated.inc(truncated)
            log.warning("Alertmanager left %d alert(s) of group %s out of its notification "
                        "(max_alerts); they are not remediated", truncated, group["groupKey"])
        if result.accepted and not claim:
            self._wakeup.set()
        return result

    async def refusal(self) -> str | None:
        """Why this replica cannot acknowledge alerts now, or None: the store refused
        intake's last commit (`refused`, the failure a webhook answers 503 for, on either
        store: a read-only database, a disk full, a write lock held past its wait). Kept
        current without webhooks by a commit through the same path (`Store.probe_intake`), at
        most once a second (the endpoint is open to anyone), waited for up to
        `ready_probe_wait`: one still waiting (a lock held by another process) leaves the
        last answer standing until it ends."""
        if self._probe is None and time.monotonic() - self._probed >= 1.0:
            self._probed = time.monotonic()
            self._probe = asyncio.create_task(self._probe_intake(), name="ready-probe")
        if self._probe is not None:  # not cancelled by this wait's end, nor raised here
            await asyncio.wait({self._probe}, timeout=self.ready_probe_wait)
        return self.refused

    async def _probe_intake(self) -> None:
        try:
            await self.store.probe_intake()
        except StoreUnavailable as exc:
            self.refused = str(exc)
        except Exception as exc:  # unforeseen: said, and not taken for a refusal
            log.exception("readiness could not probe the store: %s", exc)
        else:
            self.refused = None
        finally:
            self._probe = None

    async def replay(self, notification: Notification) -> tuple[list[dict[str, Any]], int]:
        """`replay`'s payload, decided here, and nothing else: its new alerts are stored
        claimed by this process, so a serve sharing the store never takes them, and this
        process never claims, releases nor resumes another's work (start it with
        `recover=False`). An alert already received (its dedupe key) is a duplicate, as at
        the webhook: whoever received it decides it. Returns the decisions and the
        duplicates' count.

        A dry run's items say so in the store (`alerts.DRY_RUN`): one this process leaves
        unfinished (killed, or given up) is decided dry-run by whichever worker takes it up
        (serve after its restart, a replica once the lease lapses), never acted on."""
        dry_run = self.config.mode != "live"
        if dry_run:
            notification = Notification({**notification.group_data, DRY_RUN: True},
                                        notification.items)
        result = await self.intake(notification, claim=True)
        n = self.config.max_executions
        batches = [list(result.claimed[i:i + n]) for i in range(0, len(result.claimed), n)]

        async def next_batch() -> list[InboxItem]:
            return batches.pop(0) if batches else []

        try:
            return await self._decide_batches(next_batch), result.duplicates
        except Undecided as exc:
            if not dry_run:  # a live run's journal is for the next worker to resume
                raise
            left = exc.left + [item for batch in batches for item in batch]
            raise Undecided([*exc.failures, await self._let_go(left)], exc.decisions,
                            left) from None

    async def _let_go(self, items: list[InboxItem]) -> str:
        """A dry run's undecided items marked finished (nobody else needs its own alerts),
        best effort: the store may refuse that write too. What became of them, said."""
        for item in items:
            with contextlib.suppress(Exception):
                await self.store.finish(item.id)
        return (f"{len(items)} alert(s) of this dry run left undecided, marked finished in the "
                "store unless it refused that too: any it kept is decided dry-run (planned, "
                "nothing run) by the next worker that takes it up, whatever its mode")

    async def drain(self) -> list[dict[str, Any]]:
        """Process everything pending now (tests, `remediator test`); return the decisions.
        An alert still undecided after `offline_attempts` stops the drain once its batch is
        done: `Undecided` says which and why (its item stays unfinished, for the next start)."""
        return await self._decide_batches(lambda: self.store.claim(self.config.max_executions))

    async def _decide_batches(self, next_batch: Callable[[], Awaitable[list[InboxItem]]]
                              ) -> list[dict[str, Any]]:
        """Claimed items, a batch at a time, processed offline (nobody watches retries)."""
        decisions: list[dict[str, Any]] = []
        while items := await next_batch():
            failures, left = [], []
            for item, batch in zip(items, await asyncio.gather(
                    *(self._process(i, self.offline_attempts) for i in items),
                    return_exceptions=True), strict=True):
                if isinstance(batch, _GaveUp):
                    failures.append(str(batch))
                    left.append(item)
                elif isinstance(batch, BaseException):
                    raise batch
                else:
                    decisions.extend(batch)
            if failures:
                raise Undecided(failures, decisions, left)
        return decisions

    async def _dispatch_loop(self) -> None:
        while not self._stopping:
            # Clear before looking for work: a wakeup that arrives while we claim is kept.
            self._wakeup.clear()
            free = min(self.config.max_executions - len(self._running), self.claim_batch)
            try:
                items = await self.store.claim(free) if free > 0 else []
                self._more = self._more if free <= 0 else len(items) == free
            except Exception as exc:
                # A statement the store refused (not an outage) must not end the dispatcher:
                # this replica would stay ready and never decide an acknowledged alert again.
                self._claims.failed(exc, detail=not isinstance(exc, StoreUnavailable))
                await asyncio.sleep(1)
                continue
            self._claims.succeeded()
            for item in items:  # each task leaves `_running` as it ends (`_process`)
                self._running.add(asyncio.create_task(self._process(item)))
            if items and len(self._running) < self.config.max_executions:
                continue  # there may be more right away
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=1.0)

    async def count_pending(self) -> None:
        """The pending gauge, counted when it is scraped. Counted every second by the
        dispatcher, it read the inbox's index through a storm (about 8 ms of PostgreSQL each
        time) and held up the next claim meanwhile, for a figure read every 15 s or so. Within
        a second, or the gauge keeps its last count: a store that does not answer must not
        take the whole scrape down with it. At most once a second, however often it is
        scraped (the endpoint is open to anyone who can reach it)."""
        if time.monotonic() - self._pending_counted < 1.0:
            return
        self._pending_counted = time.monotonic()
        try:
            self.metrics.inbox_pending.set(
                await asyncio.wait_for(self.store.pending_count(), timeout=1.0))
        except (StoreUnavailable, TimeoutError):
            pass
        except Exception:  # a gauge is not worth the scrape
            log.exception("cannot count the pending alerts")

    async def _process(self, item: InboxItem, attempts: int | None = None,
                       resume: tuple[dict[str, Any], bool] | None = None
                       ) -> list[dict[str, Any]]:
        """Decide one claimed alert, trying again (with backoff) while nothing could be
        recorded: forever, or `attempts` times (then `_GaveUp`, the item unfinished).
        `resume`: (the execution, approved), the resume of an approval (`_retry`)."""
        assert self.engine is not None
        try:
            await turns.take()  # an alert's first chunk waits for processing's turn too
            delay, attempt = self.store_retry_first, 0
            while True:
                attempt += 1
                try:
                    if resume is None:
                        return await self.engine.process(item)  # it finishes the item
                    decided = await self.engine.resume(*resume)
                    await self.store.finish(item.id)
                    return [decided]
                except asyncio.CancelledError:
                    raise  # shutdown: the item stays running and resumes after restart
                except LeaseLost as exc:
                    log.error("stopped processing %s: %s", item.dedupe_key, exc)
                    return []  # not ours any more: neither retried nor finished here
                except Exception as exc:
                    # Nothing could be recorded: the store failed, or a bug met while
                    # deciding (which the engine records as a failure, with a note) struck
                    # again as that was recorded. Process the alert again, with backoff (its
                    # journal skips what was done): never finished without a decision, never
                    # left for a restart (on SQLite nothing would take it up before one),
                    # and a slot held meanwhile is what `inbox_retries` and the logs show.
                    if attempt == attempts:
                        raise _GaveUp(f"alert {item.dedupe_key} not decided after {attempt} "
                                      f"attempts: {redact.text(_named(exc))}") from exc
                    self.metrics.inbox_retries.inc()
                    if isinstance(exc, StoreUnavailable):
                        log.error("store unavailable while processing %s: %s; retrying in %gs",
                                  item.dedupe_key, exc, delay)
                    else:
                        log.error("internal error processing %s, not even recorded; retrying "
                                  "in %gs", item.dedupe_key, delay, exc_info=exc)
                    await self.sleep(delay)
                    delay = min(delay * 2, self.store_retry_max)
        finally:  # its dispatcher slot is free: said here, where a done callback was one
            # loop callback more per alert
            self._running.discard(asyncio.current_task())  # type: ignore[arg-type]
            await self.engine.let_go(item.dedupe_key)  # what its retries kept, if any
            if self._more or self._stopping:
                self._wakeup.set()

    async def _age_gauges(self, now: float) -> None:
        """What the self-monitoring rules alert on: something left waiting for hours."""
        pause = await self.store.get_state(PAUSE) or {}
        paused_at = pause.get("at", now) if pause.get("paused") else None
        if self.config.guards.paused:
            paused_at = min(paused_at or self._started_at, self._started_at)
        self.metrics.paused.set(paused_at is not None)
        self.metrics.paused_seconds.set(now - paused_at if paused_at is not None else 0)
        running = await self.store.list_executions(limit=1000, outcome="running")
        started = [_epoch(e["created_at"]) for e in running if e.get("created_at")]
        self.metrics.oldest_running.set(now - min(started) if started else 0)
        pending = await self.store.list_state(PENDING)
        # A withdrawn approval keeps its entry until its run is finished: nobody waits on it.
        asked = [p["requested_at"] for p in pending.values()
                 if "requested_at" in p and "withdrawn_at" not in p]
        self.metrics.oldest_approval.set(now - min(asked) if asked else 0)

    async def _maintenance_loop(self, interval: float = 10.0) -> None:
        """Redeliver spooled notes, expire approvals, refresh gauges: periodic, off the
        alert path."""
        failing = Recurring(log, f"maintenance failed (retried every {interval:g}s)")
        while True:
            try:
                await self.maintain()
            except Exception as exc:
                failing.failed(exc, detail=not isinstance(exc, StoreUnavailable))
            else:
                failing.succeeded()
            await asyncio.sleep(interval)

    async def maintain(self) -> None:
        assert self.engine is not None and self.engine.escalator is not None
        # One replica at a time: a spooled note is delivered once, an approval expires once.
        async with self.store.critical("maintenance"):
            # Expiry first: 12 notes spooled for a black-holed sink, each waiting out its
            # timeout, kept a 20 s approval pending for minutes. Redelivery then tries each
            # sink once more at most and stops after a bounded time (the rest wait for the
            # next pass), so a dead sink delays neither this pass's end nor the next expiry.
            await self.engine.expire_approvals()
            await self.engine.escalator.redeliver(budget=self.redelivery_budget)
        now = self.clock()
        circuits = await self.store.list_state("circuit:")
        self.metrics.circuits_open.set(sum(1 for c in circuits.values() if circuit_open(c, now)))
        await self._age_gauges(now)
        await self._refresh(now)
        if now - self._pruned_at >= 3600:
            # Finished inbox items only serve deduplication. Past the retention a redelivery
            # is enqueued again, finds its execution already final (deterministic ids), and
            # runs nothing: forgetting them is safe, keeping them forever is not.
            self._pruned_at = now
            cutoff = datetime.fromtimestamp(now - self.config.inbox_retention, UTC)
            pruned = await self.store.prune_inbox(cutoff.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
            if pruned:
                log.info("pruned %d finished inbox item(s) older than %gs", pruned,
                         self.config.inbox_retention)
            pruned = await self.store.prune_history(now - self.config.history_retention)
            if pruned:
                log.info("pruned %d execution(s) older than %gs", pruned,
                         self.config.history_retention)

    async def _refresh(self, now: float) -> None:
        """Items sent again are received again, for the prune: an alert still firing, re-sent
        by Alertmanager every `repeat_interval`, was forgotten past the inbox retention like
        one long gone, and its next resend ran its playbook again (its execution, its
        cooldown's events pruned too). Here, off intake's path (a duplicate there costs no
        write), and only for items received at least an hour ago (or half the retention)."""
        if not self._resent:
            return
        keys, self._resent = self._resent, set()
        since = now - min(3600.0, self.config.inbox_retention / 2)
        try:
            await self.store.refresh_inbox(sorted(keys), datetime.fromtimestamp(
                since, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), self.store.now_iso())
        except BaseException:
            self._resent |= keys  # tried again at the next pass
            raise

    # --- operator actions --------------------------------------------------------------

    async def pause(self, paused: bool, by: str) -> None:
        """The kill switch, shared by every replica through the store."""
        await self.store.put_state(PAUSE, {"paused": paused, "by": by, "at": self.clock()})
        log.warning("automation %s by %s", "PAUSED" if paused else "resumed", by)

    async def open_circuits(self) -> list[dict[str, Any]]:
        """The circuits open now: playbook, target and their state (opened_at, until)."""
        now = self.clock()  # the store's: circuits' deadlines are on it
        return [{"playbook": key.split(":")[1], "target": key.split(":", 2)[2], **value}
                for key, value in (await self.store.list_state("circuit:")).items()
                if circuit_open(value, now)]

    async def reset_circuits(self, target: str, playbook: str, by: str) -> list[str]:
        """Close the circuits opened on `target` (namespace/kind/name), of one playbook or
        all; return the `playbook:target` names reset. A circuit counts the successes in
        its window, and those that opened it are still there: deleting its state let the
        next firing open it again. The reset's time is kept instead, and the circuit counts
        from it (`Guards._circuit`): the next alert is remediated."""
        now = self.clock()  # the store's, as the successes' times
        # Opened since its last reset (a reset's own state ends where it was reset). The
        # reset keeps `until` (now) and `opened_at`: a replica of the previous version reads
        # both, and took the reset's state for an error at every alert of that target.
        circuits = {key: value for key, value in (await self.store.list_state("circuit:")).items()
                    if key.endswith(f":{target}") and value.get("reset_at", -1)
                    < value.get("until", -1)
                    and (not playbook or key == f"circuit:{playbook}:{target}")}
        for key, value in circuits.items():
            await self.store.put_state(key, {"reset_at": now, "reset_by": by, "until": now,
                                             "opened_at": value.get("opened_at", now)})
        names = [key.split(":", 1)[1] for key in circuits]
        if names:  # what was reset, by whom: not the circuits' state, not a reset of nothing
            log.warning("circuit reset by %s: %s", by, ", ".join(names))
        return names

    async def approve(self, execution_id: str, by: str, approve: bool = True,
                      step: str | None = None, answer_within: float | None = None
                      ) -> dict[str, Any]:
        """Decide the pending approval of one step (default: the one pending) and resume
        the execution from its journal; a later gated step waits for its own approval.
        Returns the execution as resumed to its end; with `answer_within` (an HTTP answer),
        one still running by then raises `Resuming` and goes on as the dispatcher's runs
        do: an approved restart followed by a rollout's wait kept the answer for minutes,
        past the CLI's and proxies' timeouts, for an approval that had gone through.

        Approvals are serialised across replicas, and the alert's inbox item is claimed
        for this resume before the decision is recorded: no dispatcher (here or on another
        replica) runs the execution meanwhile, and if the process dies mid-resume the claim
        is released (after restart, or when its lease expires) and the work is finished
        from the journal.
        """
        assert self.engine is not None
        if self._stopping:  # a 503 at every endpoint: approved here, it ran as the store closed
            raise StoreUnavailable("shutting down: approve again in a moment (another replica, "
                                   "or this one once restarted)")
        claimed: InboxItem | None = None  # from its claim on, a failure leaves it claimed
        try:
            async with self.store.critical("approvals"):
                decision = await self.store.get_execution(execution_id)
                if decision is None:
                    raise KeyError(execution_id)
                pending = {key.rsplit(":", 1)[1]: value for key, value in
                           (await self.store.list_state(f"{PENDING}{execution_id}:")).items()}
                if step is None and len(pending) == 1:
                    step = next(iter(pending))
                if step not in pending:
                    decided = {key.rsplit(":", 1)[1]: value["status"] for key, value in
                               (await self.store.list_state(f"{APPROVAL}{execution_id}:")).items()
                               if step is None or key.rsplit(":", 1)[1] == step}
                    raise ValueError(f"{f'step {step!r}' if step else execution_id} has no pending "
                                     "approval (" + ("; ".join(f"step {name!r} {status}" for name,
                                                     status in decided.items()) or "none requested")
                                     + ")")
                # Its pending entry outlives an expiry until the execution's record is
                # written (`Engine.expire_approvals`), and a replica whose clock is behind
                # finds the TTL not passed: the approval's own state says it expired. An
                # entry whose removal was refused outlives any decision (approved, rejected,
                # withdrawn): accepted, the resume ran again over a record that was final.
                state = await self.store.get_state(f"{APPROVAL}{execution_id}:{step}") or {}
                if self.clock() > pending[step]["expires_at"] or state.get("status") == "expired":
                    raise ValueError(f"approval of step {step!r} of {execution_id} expired")
                if state.get("status") != "pending":
                    raise ValueError(f"step {step!r} of {execution_id} has no pending approval "
                                     f"(step {step!r} {state.get('status') or 'not requested'})")
                claimed = await self._claim_for_resume(decision)
                await decide_approval(self.store, f"{execution_id}:{step}",
                                      "approved" if approve else "rejected", self.clock(), by,
                                      claim=claimed)
        except Exception as exc:
            if claimed is None:
                raise
            if isinstance(exc, LeaseLost):
                # The claim lapsed here (this process stalled) before the decision, which is
                # written only with it: nothing was decided, and the run, taken up wherever
                # its alert is claimed next, finds the approval still pending.
                raise LeaseLost(f"{exc}; the {'approval' if approve else 'rejection'} of step "
                                f"{step!r} was not recorded: decide again") from exc
            # Refused, or its answer lost (recorded or not: one write). Retried outside the
            # section: a task made in it would run on the section's connection (PostgreSQL).
            self._retry(claimed, decision, approve)
            if isinstance(exc, StoreUnavailable):  # a 503 "retry" is not the whole truth
                raise StoreUnavailable(
                    f"{exc}; the {'approval' if approve else 'rejection'} of step {step!r} "
                    f"may have been recorded before that: `remediator show {execution_id}` "
                    "says; deciding again answers 409 if it was") from exc
            raise
        assert claimed is not None
        if answer_within is None:
            return await self._resume(claimed, decision, approve)
        run = asyncio.create_task(self._resume(claimed, decision, approve))
        self._running.add(run)  # a run like the dispatcher's: counted, waited for at stop
        run.add_done_callback(self._running.discard)
        await asyncio.wait((run,), timeout=answer_within)
        if run.done():
            if run.cancelled():  # stopping: decided, and resumed from its journal at restart
                raise Resuming(decision)
            try:
                return run.result()
            except LeaseLost:
                # Decided, then its claim lapsed here (this process stalled): the replica that
                # took the alert over runs it, with the decision.
                raise Resuming(decision) from None
        run.add_done_callback(_resumed)  # its caller has had its answer: said in the log
        raise Resuming(await self.store.get_execution(execution_id) or decision)

    async def _resume(self, item: InboxItem, decision: dict[str, Any],
                      approved: bool) -> dict[str, Any]:
        assert self.engine is not None
        try:
            result = await self.engine.resume(decision, approved=approved)
        except asyncio.CancelledError:
            raise  # shutdown: still claimed, resumed from the journal after restart
        except Exception:
            self._retry(item, decision, approved)
            raise
        await self.store.finish(item.id)
        return result

    def _retry(self, item: InboxItem, decision: dict[str, Any], approved: bool) -> None:
        """An approval's claimed item whose decision or resume could not be recorded (the
        store failed, or even a bug's record did): the caller hears of it, and the resume is
        tried again by the dispatcher's retries, with backoff, as any alert (a claim left
        here waits for a restart on SQLite, and approving again finds it taken): the run goes
        on as far as the approval recorded says, or asks for it again. The execution is
        resumed, not the alert matched again: a playbook a reload removed is never matched,
        and its execution stayed `blocked` on the decided approval, unrecorded. Not once
        stopping: the item stays claimed, and is resumed from the journal after restart."""
        if not self._stopping:
            self._running.add(asyncio.create_task(self._process(item, resume=(decision,
                                                                               approved))))

    async def _claim_for_resume(self, decision: dict[str, Any]) -> InboxItem:
        """The alert's inbox item, claimed here; a run in progress (here or on another
        replica) is waited for, briefly."""
        alert = Alert.from_dict(decision["alert"])
        await self.store.enqueue([(alert.dedupe_key, alert.to_dict(), decision.get("group") or {})])
        for _ in range(50):
            item = await self.store.claim_key(alert.dedupe_key)
            if item is not None:
                return item
            await asyncio.sleep(0.2)
        raise ValueError(f"the alert of {decision['id']} is being processed right now; "
                         "approve again in a moment")


def _resumed(run: asyncio.Task[dict[str, Any]]) -> None:
    """A resume that outlived its answer: its failure (retried by `Service._retry` where
    the resume itself failed) is said here, not left to "exception was never retrieved"."""
    if not run.cancelled() and (exc := run.exception()) is not None:
        log.error("an approved execution's resume failed after its answer: %s", _named(exc))


class _GaveUp(Exception):
    """One alert of an offline drain left undecided (`Service._process`'s `attempts`)."""


def _named(exc: Exception) -> str:
    """The error as a store reports it (its own words), else with its type."""
    return str(exc) if isinstance(exc, StoreUnavailable) else f"{type(exc).__name__}: {exc}"


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


FINDINGS_LOGGED = 20  # a rule set's warnings logged at a load; `remediator lint` lists all


def _log_findings(rules: RuleSet) -> None:
    """A loaded rule set's warnings, logged: `lint` showed them, and serve never did."""
    warnings = [p for p in rules.warnings if p.severity == "warning"]
    for problem in warnings[:FINDINGS_LOGGED]:
        log.warning("rules: %s", problem)
    if len(warnings) > FINDINGS_LOGGED:
        log.warning("rules: %d more warnings; `remediator lint` lists them all",
                    len(warnings) - FINDINGS_LOGGED)
