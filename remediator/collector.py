"""Memory in `serve`: the garbage collector paused while start-up builds what lives as long
as the process (then collected once and frozen, by the caller), full collections kept out
of a storm's way, and the heap made to hold a connection's reads."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from collections.abc import Iterator

from . import turns


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Loading a rule set allocates a million objects that all stay alive until it is done;
    each batch of them set off a garbage collection that walked every one of them again (a
    fifth of the time of 1 000 files). Nothing made here is cyclic garbage worth chasing
    meanwhile; the collector resumes (and catches up) when the files are read. Not for a
    load in another thread (a reload while `serve` answers): the switch is the whole
    process's, and the event loop's garbage would wait for the load."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def receive_buffers_from_the_heap() -> None:
    """asyncio reads a connection into a new 256 KiB bytes object, then shrinks it to what
    came. glibc serves that large a request with a mapping of its own (mmap, a page fault,
    mremap, munmap and a TLB flush: ~13 us a read against ~2 from the heap, on a socket pair)
    unless a free block of its heap fits or a freed mapping larger than it raised its
    threshold; in `serve` with processing off neither held in 4 runs of 10 (0.7-0.9 mappings
    per webhook). One block larger than the buffer, allocated and freed here, raises it
    for the process's life (a heap may then keep up to twice that free before trimming).
    With another allocator it is a block allocated and freed."""
    bytes(_RECEIVE_BUFFER + (64 << 10))


_RECEIVE_BUFFER = 256 << 10  # asyncio's selector transport's `max_size`


# In a storm what outlives young collections (executions in flight) made the oldest generation
# grow fast, and the collector walked all of it every few seconds: 20-30 ms of the loop, with
# webhooks waiting. Its automatic passes are off in `serve`; this runs them once no webhook
# was in flight for a second (a storm's 8 connections leave gaps shorter than that), or after
# FULL_GC_FORCED young passes whatever happens (a storm that never pauses frees its cycles),
# or once the oldest generation doubled since the last (past FULL_GC_OBJECTS): a storm of
# failing live steps leaves ~90 objects of cycles per decision there (exceptions and their
# frames) and only one young pass per ~20 decisions; counting passes alone, 2 million objects
# piled up before one full pass of seconds.
FULL_GC_INTERVAL, FULL_GC_FORCED, FULL_GC_OBJECTS = 10.0, 1000, 50_000
_survived = [0]  # the oldest generation's size after the last full collection


def collect_between_webhooks() -> bool:
    """A full collection if anything reached the oldest generation since the last and no
    webhook was in flight for a second (or too much did); True if it ran."""
    pending = gc.get_count()[2]  # young (generation 1) passes since the last full one
    if not pending or (not turns.turns().quiet(1.0) and pending < FULL_GC_FORCED and
                       len(gc.get_objects(2)) < max(2 * _survived[0], FULL_GC_OBJECTS)):
        return False
    gc.collect()
    _survived[0] = len(gc.get_objects(2))
    return True


# A young pass once this many more container objects are alive than at the last one (Python's
# 700): a storm's decisions in flight rise and fall by more than 700, so the count crossed it
# again and again, each pass walking what those decisions held (~24 k instructions a decision,
# 2 %); at 10 000 a drain's passes fell from 73 to 1 in 1 800 decisions. A pass then walks up
# to this many objects (~0.4 ms), and cyclic garbage waits for as many at most.
YOUNG_OBJECTS = 10_000


def young_passes() -> None:
    """A young pass per YOUNG_OBJECTS objects (`serve`, and drain_bench as it)."""
    gc.set_threshold(YOUNG_OBJECTS, *gc.get_threshold()[1:])


def between_webhooks() -> asyncio.Task[None]:
    """Turn the collector's automatic full passes off; run them as said above, until the
    returned task is cancelled. Young passes as `young_passes` says."""
    young_passes()
    gc.set_threshold(*gc.get_threshold()[:2], 1 << 30)
    return asyncio.create_task(_collect_between_webhooks(), name="gc")


async def _collect_between_webhooks() -> None:
    while True:
        await asyncio.sleep(FULL_GC_INTERVAL)
        collect_between_webhooks()
