"""What a live stream sends at its start and at each tick, and what it keeps between reads
(`live.Stream`)."""

from __future__ import annotations

import asyncio
from typing import Any

from remediator.console.live import BEFORE, LATEST, Stream, Tick


def at(n: int) -> str:
    """The store's time `n` seconds into the test, as the stores stamp it."""
    return f"2026-12-02T{1 + n // 3600:02}:{n // 60 % 60:02}:{n % 60:02}.000000Z"


def decisions(first: int, count: int, outcome: str = "unmatched") -> list[dict[str, Any]]:
    """`count` decisions from number `first` on (decision n made and committed at second n,
    the store's position n), newest first, as a read returns them."""
    return [{"id": f"d{n:05}", "created_at": at(n), "updated_at": at(n), "seq": n,
             "outcome": outcome} for n in range(first + count - 1, first - 1, -1)]


def tick(history: list[dict[str, Any]], last_read: int, now: int) -> Tick:
    """The feed's read at position `now`, its last at `last_read`: those committed since,
    the latest first (one more than a stream sends, as the feed reads)."""
    changed = sorted((d for d in history if last_read < d["seq"] <= now),
                     key=lambda d: d["seq"], reverse=True)
    return Tick(changed[:LATEST + 1], str(last_read), str(now))


def changes(stream: Stream, read: Tick) -> tuple[list, bool]:
    """A tick that starts where the stream is: no read of its own (no store)."""
    assert read.since == stream.at
    return asyncio.run(stream.changes(read, None))  # type: ignore[arg-type]


def test_a_stream_open_for_long_keeps_no_more_than_one_read():
    """It kept every id it ever sent: an open tab's memory grew by a decision each decision,
    for the tab's whole life. Now it keeps the last read, and still sends each once."""
    history = decisions(0, 10)
    stream = Stream(history, None, str(9))
    sent_ids: list[str] = []
    for first in range(10, 3000, 20):  # ticks of 20 new decisions each, 20 s apart
        history = decisions(first, 20) + history
        sent, gap = changes(stream, tick(history, first - 1, first + 19))
        assert not gap
        sent_ids += [d["id"] for _, d in sent]
        assert len(stream.seen) <= LATEST
    assert sent_ids == [f"d{n:05}" for n in range(10, 3010)]


def test_a_read_says_when_it_cannot_hold_all_that_came():
    """At the stream's start: a full read whose oldest is newer than what the browser has."""
    history = decisions(0, LATEST + 6)
    assert Stream(history[:LATEST], BEFORE, str(60)).read(history[:LATEST])[1]
    assert not Stream(history[:LATEST - 1], BEFORE, str(60)).read(history[:LATEST - 1])[1]


def test_a_tick_says_when_it_cannot_hold_all_that_changed():
    """More committed since the stream's last read than a read holds (a storm between two
    ticks): the newest are sent and the stream says the rest is missing; a read that holds
    them all sends them all."""
    history = decisions(0, 5)
    stream = Stream(history, None, str(4))
    history = decisions(5, LATEST + 1) + history
    sent, gap = changes(stream, tick(history, 4, LATEST + 5))
    assert gap and len(sent) == LATEST
    # The newest sent, and the position before the read: the browser has all of it once
    # the read is sent (the stream's cursor then).
    assert sent[-1][0] == f"{history[0]['created_at']}/{history[0]['id']}@4"
    assert stream.cursor() == f"{history[0]['created_at']}/{history[0]['id']}@{LATEST + 5}"
    history = decisions(LATEST + 6, 3) + history
    sent, gap = changes(stream, tick(history, LATEST + 5, LATEST + 9))
    assert not gap and [d["id"] for _, d in sent] == [d["id"] for d in history[:3][::-1]]
    # What changed is unknown (the stream's position is not the store's): a gap.
    assert asyncio.run(stream.changes(Tick(None, str(LATEST + 9), str(LATEST + 10)),
                                      None))[1]  # type: ignore[arg-type]


def test_an_older_decision_whose_outcome_changed_is_sent():
    """The stream read the latest 50 by creation at each tick: a decision older than those
    (an approval answered, a run ending long after it began) changed and was never sent."""
    history = decisions(0, LATEST + 10, "running")
    stream = Stream(history[:LATEST], None, str(LATEST + 10))
    old = {**history[-1], "outcome": "succeeded", "updated_at": at(LATEST + 11),
           "seq": LATEST + 11}
    history[-1] = old
    sent, gap = changes(stream, tick(history, LATEST + 10, LATEST + 12))
    assert [(d["id"], d["outcome"]) for _, d in sent] == [(old["id"], "succeeded")] and not gap
    assert sent[0][0] == f"{history[0]['created_at']}/{history[0]['id']}@{LATEST + 10}"
    assert changes(stream, tick(history, LATEST + 12, LATEST + 13)) == ([], False)


def test_a_changed_outcome_within_a_read_is_sent_again():
    history = decisions(0, 3, "running")
    stream = Stream(history, None, str(3))
    history[1] = {**history[1], "outcome": "succeeded", "updated_at": at(4), "seq": 4}
    sent, gap = changes(stream, tick(history, 3, 5))
    assert [d["id"] for _, d in sent] == [history[1]["id"]] and not gap
    assert changes(stream, tick(history, 5, 6)) == ([], False)
