"""What a live stream sends at its start and at each tick, and what it keeps between reads
(`live.Stream`)."""

from __future__ import annotations

from typing import Any

from remediator.console.live import BEFORE, LATEST, OVERLAP, Stream, Tick, earlier


def at(n: int) -> str:
    """The store's time `n` seconds into the test, as the stores stamp it."""
    return f"2026-12-02T{1 + n // 3600:02}:{n // 60 % 60:02}:{n % 60:02}.000000Z"


def decisions(first: int, count: int, outcome: str = "unmatched") -> list[dict[str, Any]]:
    """`count` decisions from number `first` on (decision n made and written at second n),
    newest first, as a read returns them."""
    return [{"id": f"d{n:05}", "created_at": at(n), "updated_at": at(n), "outcome": outcome}
            for n in range(first + count - 1, first - 1, -1)]


def tick(history: list[dict[str, Any]], last_read: int, now: int) -> Tick:
    """The feed's read at second `now`, its last at `last_read`: those written since, the
    latest written first."""
    since = earlier(at(last_read), OVERLAP)
    changed = sorted((d for d in history if d["updated_at"] >= since),
                     key=lambda d: d["updated_at"], reverse=True)
    return Tick(changed[:LATEST], since, at(now))


def test_a_stream_open_for_long_keeps_no_more_than_one_read():
    """It kept every id it ever sent: an open tab's memory grew by a decision each decision,
    for the tab's whole life. Now it keeps the last read, and still sends each once."""
    history = decisions(0, 10)
    stream = Stream(history, None, at(10))
    sent_ids: list[str] = []
    for first in range(10, 3000, 20):  # ticks of 20 new decisions each, 20 s apart
        history = decisions(first, 20) + history
        sent, gap = stream.changes(tick(history, first, first + 20))
        assert not gap
        sent_ids += [d["id"] for _, d in sent]
        assert len(stream.seen) <= LATEST
    assert sent_ids == [f"d{n:05}" for n in range(10, 3010)]


def test_a_read_says_when_it_cannot_hold_all_that_came():
    """At the stream's start: a full read whose oldest is newer than what the browser has."""
    history = decisions(0, LATEST + 6)
    assert Stream(history[:LATEST], BEFORE, at(60)).read(history[:LATEST])[1]
    assert not Stream(history[:LATEST - 1], BEFORE, at(60)).read(history[:LATEST - 1])[1]


def test_a_tick_says_when_it_cannot_hold_all_that_changed():
    """More written since the stream's last read than a read holds (a storm between two
    ticks): the newest are sent and the stream says the rest is missing; a read that holds
    changes from before its last read proves nothing lies between."""
    history = decisions(0, 5)
    stream = Stream(history, None, at(5))
    history = decisions(5, LATEST + 1) + history
    sent, gap = stream.changes(tick(history, 5, LATEST + 6))
    assert gap and len(sent) == LATEST
    assert sent[-1][0] == f"{history[0]['created_at']}/{history[0]['id']}"  # the newest sent
    history = decisions(LATEST + 6, 3) + history
    sent, gap = stream.changes(tick(history, LATEST + 6, LATEST + 9))
    assert not gap and [d["id"] for _, d in sent] == [d["id"] for d in history[:3][::-1]]
    # A stream that missed reads for longer than a read reaches back.
    late = Stream(history, None, at(0))
    assert late.changes(tick(history, LATEST + 9, LATEST + 10))[1]


def test_an_older_decision_whose_outcome_changed_is_sent():
    """The stream read the latest 50 by creation at each tick: a decision older than those
    (an approval answered, a run ending long after it began) changed and was never sent."""
    history = decisions(0, LATEST + 10, "running")
    stream = Stream(history[:LATEST], None, at(LATEST + 10))
    old = {**history[-1], "outcome": "succeeded", "updated_at": at(LATEST + 11)}
    history[-1] = old
    sent, gap = stream.changes(tick(history, LATEST + 10, LATEST + 12))
    assert [(d["id"], d["outcome"]) for _, d in sent] == [(old["id"], "succeeded")] and not gap
    assert sent[0][0] == f"{history[0]['created_at']}/{history[0]['id']}"  # cursor unmoved
    assert stream.changes(tick(history, LATEST + 12, LATEST + 13)) == ([], False)


def test_a_changed_outcome_within_a_read_is_sent_again():
    history = decisions(0, 3, "running")
    stream = Stream(history, None, at(3))
    history[1] = {**history[1], "outcome": "succeeded", "updated_at": at(4)}
    sent, gap = stream.changes(tick(history, 3, 5))
    assert [d["id"] for _, d in sent] == [history[1]["id"]] and not gap
    assert stream.changes(tick(history, 5, 6)) == ([], False)
