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

from tests.integration.test_guards import web
from tests.integration.test_note_once import _hooked
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
