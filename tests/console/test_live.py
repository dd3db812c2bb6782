"""What a live stream sends at each read, and what it keeps between reads (`live.Stream`)."""

from __future__ import annotations

from remediator.console.live import BEFORE, LATEST, Stream


def decisions(first: int, count: int, outcome: str = "unmatched") -> list[dict[str, str]]:
    """`count` decisions from number `first` on, newest first, as a read returns them."""
    return [{"id": f"d{n:05}", "created_at": f"2026-12-02T01:{n // 60 % 60:02}:{n % 60:02}Z",
             "outcome": outcome} for n in range(first + count - 1, first - 1, -1)]


def test_a_stream_open_for_long_keeps_no_more_than_one_read():
    """It kept every id it ever sent: an open tab's memory grew by a decision each decision,
    for the tab's whole life. Now it keeps the last read, and still sends each once."""
    history = decisions(0, 10)
    stream = Stream(history, None)
    sent_ids: list[str] = []
    for first in range(10, 3000, 20):  # ticks of 20 new decisions each
        history = decisions(first, 20) + history
        sent, gap = stream.read(history[:LATEST])
        assert not gap
        sent_ids += [d["id"] for _, d in sent]
        assert len(stream.seen) <= LATEST
    assert sent_ids == [f"d{n:05}" for n in range(10, 3010)]


def test_a_read_says_when_it_cannot_hold_all_that_came():
    """The one rule, at the stream's start and at its ticks: a full read whose oldest is newer
    than what the browser has."""
    history = decisions(0, 5)
    stream = Stream(history, None)
    history = decisions(5, LATEST + 1) + history
    sent, gap = stream.read(history[:LATEST])
    assert gap and len(sent) == LATEST
    assert sent[-1][0] == f"{history[0]['created_at']}/{history[0]['id']}"  # the newest sent
    # A read holding the newest sent: nothing between it and the new ones, no gap.
    history = decisions(LATEST + 6, LATEST - 1) + history
    sent, gap = stream.read(history[:LATEST])
    assert not gap and len(sent) == LATEST - 1
    # From a page that drew none: past a read's worth, at the start.
    assert Stream(history[:LATEST], BEFORE).read(history[:LATEST])[1]
    assert not Stream(history[:LATEST - 1], BEFORE).read(history[:LATEST - 1])[1]


def test_a_changed_outcome_within_a_read_is_sent_again():
    history = decisions(0, 3, "running")
    stream = Stream(history, None)
    history[1] = {**history[1], "outcome": "succeeded"}
    sent, gap = stream.read(history)
    assert [d["id"] for _, d in sent] == [history[1]["id"]] and not gap
    assert stream.read(history) == ([], False)
