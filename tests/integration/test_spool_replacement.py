"""A note that replaces one still spooled is sent, whatever became of the one it replaced.

A delivery finding a note of the same execution spooled for its sink puts itself in its place
(the spool sends it, once: `Escalator._deliver`). The spool's redelivery may be sending the
older note at that moment: the receiver here (a real HTTP server) holds that request open while
the newer note takes its place, then refuses the older one for good (413). The redelivery then
removed the spool entry, holding the newer note by then, which nobody had tried: lost, while
its decision says `spooled`.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from tests.integration.test_guards import web
from tests.integration.test_note_once import _hooked
from tests.integration.test_withdrawn_approval import replicas
from tests.support.webhook import Delivery, WebhookReceiver


def test_a_note_that_replaced_one_being_redelivered_and_refused_is_still_sent(tmp_path, run):
    receiver = WebhookReceiver(status=503)
    sending, answer = threading.Event(), threading.Event()

    def hold(delivery: Delivery) -> None:  # the receiver's thread: the request stays open
        if delivery.body["outcome"] == "blocked":
            sending.set()
            answer.wait(10)

    async def scenario() -> tuple[dict, dict, dict]:
        h = await _hooked(tmp_path, receiver, approval=True)
        [asked] = await h.fire(web(0))  # the approval's request: the receiver is down
        receiver.status, receiver.on_post = 413, hold
        redelivery = asyncio.create_task(h.service.maintain())
        assert await asyncio.to_thread(sending.wait, 10)
        rejected = await h.service.approve(asked["id"], by="alice", approve=False)
        answer.set()  # the request refused for good, once the rejection's note replaced it
        await redelivery
        receiver.status, receiver.on_post = 200, None
        await h.service.maintain()
        left = await h.service.store.list_state("spool:")
        await h.service.stop()
        return asked, rejected, left

    try:
        asked, rejected, left = run(scenario())
    finally:
        answer.set()
        receiver.stop()
    assert asked["escalation"]["deliveries"]["hook"] == "spooled"
    assert rejected["escalation"]["deliveries"]["hook"] == "spooled", rejected["escalation"]
    outcomes = [(d.body["outcome"], d.body["reason"].split(":")[0]) for d in receiver.deliveries]
    assert outcomes[-1] == (rejected["outcome"], "approval_denied"), outcomes
    assert left == {}


def test_a_note_replacing_one_another_replica_just_delivered_is_still_sent(
        tmp_path, run, postgres_url):
    """Two replicas (PostgreSQL). A's redelivery sent the spooled request and read the spool
    entry to remove it; B's rejection replaced it right then (one round trip between A's read
    and its removal): removed by A, the rejection's note was lost. Paused at that read, never
    timed; wherever B's replacement lands, its note reaches the receiver."""
    receiver = WebhookReceiver(status=503)

    async def scenario() -> dict:
        a, b = await replicas(tmp_path, receiver, postgres_url)
        [asked] = await a.fire(web(0))  # the approval's request: the receiver is down
        receiver.status = 200
        read, go = asyncio.Event(), asyncio.Event()
        real = a.service.store.get_state

        async def paused(key: str) -> Any:  # A's read of the spool entry, once sent
            got = await real(key)
            if key.startswith("spool:") and not read.is_set():
                read.set()
                await go.wait()
            return got

        a.service.store.get_state = paused
        redelivery = asyncio.create_task(a.service.maintain())
        reading = asyncio.create_task(read.wait())  # (not reached if nothing reads it)
        await asyncio.wait([redelivery, reading], timeout=10, return_when=asyncio.FIRST_COMPLETED)
        reading.cancel()
        rejected = await b.service.approve(asked["id"], by="alice", approve=False)
        go.set()
        await redelivery
        await a.service.maintain()
        for h in (a, b):
            await h.service.stop()
        return rejected

    try:
        rejected = run(scenario())
    finally:
        receiver.stop()
    outcomes = [(d.body["id"], d.body["reason"].split(":")[0]) for d in receiver.deliveries]
    assert (rejected["id"], "approval_denied") in outcomes, outcomes
