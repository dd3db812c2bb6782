"""How decisions are stored compactly: the same way on both stores.

Most of a routine decision repeats the previous decision of its playbook: the escalation
note's boilerplate, owner and next steps, the step descriptions, the labels. So a decision
body is compressed against a dictionary, its *reference*: the body of the first decision
this process stored for the same playbook, alert status, mode and outcome, kept once in the
store's `refs` table. A decision body is a Zstandard frame against its reference, digested
once per reference (`Refs.pack`; version 13 of PostgreSQL's schema, 5 of SQLite's: before,
zlib with the reference as its preset dictionary, still read). On the storm bench's traffic
a decision body takes ~1.2 KB compressed alone and ~0.17 KB against its reference. An inbox
item (the alert and its notification's group) is zlib-compressed with its alertname's
reference as preset dictionary (`pack_ref`): ~590 bytes of JSON, ~45 packed. The one reader
(`unpack_ref`) tells the two formats apart by their first bytes.

A process uses a reference for new writes only while it is younger than `WINDOW`, then
makes a new one. Every row written with a reference was therefore written (an execution's
`updated_at`, an item's `received_at`) before the reference's creation plus `WINDOW`, so
pruning may delete a reference older than the history cutoff plus `WINDOW` that no row kept
past the cutoff (an execution running or waiting for an approval, an unfinished item) uses.
Ids are random: each process makes its own, and replicas never contend on one row.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from .base import InboxItem

if TYPE_CHECKING:
    import zstandard

log = logging.getLogger(__name__)

WINDOW = 6 * 3600.0
_REF_MAX = 16 << 10  # a dictionary's first 16 KiB (zlib's window is 32, so is zstd's below)
_KEYS = 256  # references cached per process: at most 8 MiB, whatever the rules
# References kept digested for decisions (`Refs.pack`): ~110 KiB each (its digest ~40, its
# compressor's state ~70), so at most ~7 MiB; the storm bench's traffic uses 60.
_PACKERS = 64
# Inbox items' references kept primed (`Refs.pack_item`): ~23 KiB each, so at most ~1.5 MiB.
_PRIMED = 64
# Other bodies (step records of live runs) are compressed alone, past this size: below it,
# the header costs more than it saves.
_PACK_OVER = 256


@dataclass
class Ref:
    """A reference (the preset dictionary records are compressed against), by its id."""

    id: int
    created: float
    data: bytes
    stored: bool = False  # committed: writes no longer need to insert it
    # A decision's reference digested (`Refs.pack`), when first used: made and used in the
    # event loop's thread only (a compressor is not for two threads at once).
    packer: zstandard.ZstdCompressor | None = field(default=None, repr=False, compare=False)
    # An inbox item's reference set up as zlib's preset dictionary (`Refs.pack_item`): the
    # same thread only, as `packer`.
    primed: Any = field(default=None, repr=False, compare=False)


def _zstd() -> Any:
    """The `zstandard` module, imported when a decision is first packed or read (~1.6 ms of
    CPU: start-up imports nothing it does not need before ready)."""
    import zstandard
    return zstandard


class Refs:
    """This process's current reference per kind of record, and the data of references
    recently written or read (what reading an inbox item needs)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._by_key: OrderedDict[str | tuple[Any, ...], Ref] = OrderedDict()
        self._data: OrderedDict[int, bytes] = OrderedDict()
        self._packers: OrderedDict[int, Ref] = OrderedDict()  # the references digested
        self._primed: OrderedDict[int, Ref] = OrderedDict()  # items' references primed
        self._clock = clock

    def for_body(self, decision: dict[str, Any], text: bytes) -> Ref:
        # A tuple (a string joined from the four, by a generator, was ~0.5 % of a storm's
        # Python); an inbox item's key is a string, never equal to one.
        get = decision.get
        return self._for((get("playbook"), get("status"), get("mode"), get("outcome")), text)

    def for_alert(self, alert: dict[str, Any], text: bytes) -> Ref:
        """An inbox item (alert and group) is packed against its alertname's reference."""
        return self._for("\x01" + str(alert.get("labels", {}).get("alertname")), text)

    def _for(self, key: str | tuple[Any, ...], text: bytes) -> Ref:
        now = self._clock()
        ref = self._by_key.get(key)
        if ref is None or now - ref.created >= WINDOW:
            ref = Ref(secrets.randbits(62), now, text[:_REF_MAX])
            self._by_key[key] = ref
            if len(self._by_key) > _KEYS:
                self._by_key.popitem(last=False)
            self.remember(ref.id, ref.data)
        self._by_key.move_to_end(key)
        return ref

    def pack(self, text: bytes, ref: Ref) -> bytes:
        """A decision's body: a Zstandard frame against its reference, digested once (zlib
        hashed its preset dictionary again, in a new 256 KiB state, for every record: ~225 k
        instructions a body against ~37 k, ~197 bytes against ~171 on the storm bench's
        decisions). The `_PACKERS` references used last keep their digest and compressor; a
        reference used again after that is digested again (~225 k, as zlib was)."""
        packer = ref.packer
        if packer is None:
            packer = ref.packer = _packer(ref.data)
            self._packers[ref.id] = ref
            if len(self._packers) > _PACKERS:
                self._packers.popitem(last=False)[1].packer = None
        else:
            self._packers.move_to_end(ref.id)
        return packer.compress(text)

    def pack_item(self, text: bytes, ref: Ref) -> bytes:
        """An inbox item, packed as `pack_ref` packs it (the same bytes): from a copy of a
        compressor primed with its reference once, for the `_PRIMED` references used last.
        Setting the dictionary up was ~16 k instructions an alert, the copy ~3 k (callgrind:
        ~22 k fewer per webhook of two alerts, of ~690 k)."""
        if not _small(text, ref.data):
            return pack_ref(text, ref.data)
        primed = ref.primed
        if primed is None:
            primed = ref.primed = _small_packer(ref.data)
            self._primed[ref.id] = ref
            if len(self._primed) > _PRIMED:
                self._primed.popitem(last=False)[1].primed = None
        else:
            self._primed.move_to_end(ref.id)
        z = primed.copy()
        return z.compress(text) + z.flush()

    def remember(self, ref_id: int, data: bytes) -> None:
        self._data[ref_id] = data
        self._data.move_to_end(ref_id)
        if len(self._data) > _KEYS:
            self._data.popitem(last=False)

    def known(self, ids: Iterable[int | None]) -> tuple[dict[int, bytes], list[int]]:
        """The data of these references known here, and the ids to read from the store."""
        wanted = {i for i in ids if i is not None}
        found = {i: data for i in wanted if (data := self._data.get(i)) is not None}
        return found, sorted(wanted - found.keys())


def dumps(value: Any) -> bytes:
    """JSON as UTF-8 for an inbox item or a decision's body: orjson (a decision's body in
    ~5 us, against 25-40 with json), or json for what orjson refuses (a lone surrogate, an
    integer past 64 bits, a key that is not a string). Not for what may hold a non-finite
    float (a step's result: a Prometheus value of NaN), which orjson writes as null where
    json wrote NaN."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(value).encode()


def item_texts(rows: Iterable[tuple[str, dict[str, Any], dict[str, Any]]]) -> list[bytes]:
    """Each inbox row's alert and group as stored: the JSON of `[alert, group]`. The alerts
    of a notification share its group, encoded here once (encoding it again for each alert
    was half of packing's time at intake)."""
    groups: dict[int, bytes] = {}  # by identity: every group is alive for the whole call
    texts = []
    for _, alert, group in rows:
        text = groups.get(id(group))
        if text is None:
            text = groups[id(group)] = dumps(group)
        texts.append(b"[" + dumps(alert) + b"," + text + b"]")
    return texts


def _item_loads(text: bytes) -> Any:
    """An inbox item's JSON, read by orjson (half json's time) or, where orjson refuses, by
    json. Both read an item alike: it holds what the webhook's validation let through,
    strings and bounded integers (orjson reads an integer past 64 bits as a float, and a
    decision's body may hold one: bodies are read by json)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def unpack_item(alert: str | bytes, group: str, ref: bytes | None) -> tuple[dict, dict]:
    """An inbox item's alert and group: packed together, or (before packing) JSON text each."""
    if ref is not None:
        both = unpack_ref(alert if isinstance(alert, bytes) else alert.encode(), ref,
                          _item_loads)
        return both[0], both[1]
    return json.loads(alert), json.loads(group)


def unpack_items(rows: Iterable[tuple[int, str, str | bytes, str, str, bytes | None]]
                 ) -> tuple[list[InboxItem], list[int]]:
    """Claimed rows (id, dedupe key, alert or packed, group, received_at, the reference's
    data) as items in id order, and the ids of rows that cannot be read (corrupt, or their
    reference gone). Such a row can never be processed; left claimable, it came first in
    every claim and held back every alert acknowledged after it, for ever."""
    items, unreadable = [], []
    for item_id, key, alert, group, received_at, ref in sorted(rows, key=lambda r: r[0]):
        try:
            items.append(InboxItem(item_id, key, *unpack_item(alert, group, ref), received_at))
        except Exception as exc:  # whatever the bytes make the decoder raise
            log.error("acknowledged alert %s (inbox item %d) cannot be read, so it is not "
                      "processed: %s: %s", key, item_id, type(exc).__name__, exc)
            unreadable.append(item_id)
    return items, unreadable


def awaiting(decision: dict[str, Any]) -> str | None:
    """The step a decision waits on an approval for (`blocked approval_pending`), else None.
    Both stores index it with the record (`awaiting`, NULL for every other decision): the
    pending-approval entries are a second index, kept by other writes, and a run whose
    entry was lost (older code decided it first, then its record was refused) must still
    be found without reading history (`engine.approvals.finish_stranded`)."""
    if decision.get("outcome") == "blocked" and (decision.get("reason") or "").startswith(
            "approval_pending"):
        return decision.get("blocked_step") or ""
    return None


def awaiting_rows(rows: Iterable[tuple[str, Callable[[], dict[str, Any]]]]
                  ) -> list[tuple[str | None, str]]:
    """(blocked step, id) of the records among `rows` (id, how to read its body) that wait on
    an approval: what the migrations that add the `awaiting` index fill in. A body that
    cannot be read is left out (logged), never fails the migration: the store would not open."""
    found = []
    for execution_id, read in rows:
        try:
            step = awaiting(read())
        except Exception as exc:  # whatever a damaged body or a pruned reference raises
            log.error("execution %s cannot be read to index it (%s: %s)", execution_id,
                      type(exc).__name__, exc)
            continue
        if step is not None:
            found.append((step, execution_id))
    return found


def body_text(decision: dict[str, Any]) -> bytes:
    """What is stored of a decision: all of it but its journaled steps. A dry-run decision
    keeps its steps (nothing ran, so nothing was journaled)."""
    body = decision if decision.get("mode") == "dry-run" else {
        k: v for k, v in decision.items() if k != "steps"}
    if any(s.get("result") for s in body.get("steps") or ()):  # a run's, resumed as a plan
        return json.dumps(body).encode()
    return dumps(body)


def pack_ref(text: bytes, ref: bytes) -> bytes:
    """An inbox item, zlib-compressed with its reference as preset dictionary. Not zstd as
    decisions are: during a rolling update a replica of the version before may claim an
    item, and an item it cannot read is finished unprocessed (`unpack_items`), where a
    decision it cannot read leaves its alert to be retried (by a newer replica, in the end)."""
    # Small state for small records (an inbox item, on the intake path): measured twice as
    # fast to set up and as small. A long one compresses better with more; the window must
    # hold the dictionary. zlib's header says which, so one decompressor reads every size.
    # (A long one was a decision's body, at level 3, before `Refs.pack`; a smaller state was
    # measured no faster in `serve`'s process.)
    # (`Refs.pack_item` packs a small one from a copy of a primed compressor: the same bytes.)
    z = _small_packer(ref) if _small(text, ref) else \
        zlib.compressobj(3, zlib.DEFLATED, zlib.MAX_WBITS, 8, zlib.Z_DEFAULT_STRATEGY, ref)
    return z.compress(text) + z.flush()


def _small(text: bytes, ref: bytes) -> bool:
    return len(text) + len(ref) <= 2048


def _small_packer(ref: bytes) -> Any:
    """zlib's compressor of a small item with `ref` as its preset dictionary (level 1, a
    4 KiB window, memory level 1)."""
    return zlib.compressobj(1, zlib.DEFLATED, 12, 1, zlib.Z_DEFAULT_STRATEGY, ref)


# A Zstandard frame's first four bytes. A zlib stream never starts with them: its first two
# bytes, read as a big-endian number, are a multiple of 31 (0x28B5 is not).
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _packer(data: bytes) -> zstandard.ZstdCompressor:
    """A compressor of decisions against the reference `data`, digested: zstd's level 1 with
    a 4096-entry hash table (its level 3, or larger tables, were neither smaller nor cheaper
    on the storm bench's decisions, and each table is memory kept per reference); a checksum,
    as zlib's Adler-32 was (4 bytes: a damaged body fails to read rather than read back
    altered), and the body's size (a one-shot decompression needs it)."""
    zstd = _zstd()
    params = zstd.ZstdCompressionParameters.from_level(
        1, source_size=_REF_MAX, dict_size=len(data), hash_log=12,
        write_checksum=1, write_content_size=1, write_dict_id=0)
    digest = zstd.ZstdCompressionDict(data, dict_type=zstd.DICT_TYPE_RAWCONTENT)
    digest.precompute_compress(compression_params=params)
    return zstd.ZstdCompressor(dict_data=digest, compression_params=params)


def unpack_ref(blob: bytes, ref: bytes, loads: Callable[[bytes], Any] = json.loads) -> Any:
    """A record packed against its reference: a Zstandard frame (a decision since
    `Refs.pack`) or a zlib stream (an inbox item, a decision written before)."""
    if blob.startswith(_ZSTD_MAGIC):
        # A decompressor per read, none kept: a storm's drain reads no decision's body (a
        # claim reads inbox items), and a new one (~22 k instructions) is under zlib's (~59 k).
        zstd = _zstd()
        digest = zstd.ZstdCompressionDict(ref, dict_type=zstd.DICT_TYPE_RAWCONTENT)
        return loads(zstd.ZstdDecompressor(dict_data=digest).decompress(blob))
    z = zlib.decompressobj(zdict=ref)
    return loads(z.decompress(blob) + z.flush())


def pack(value: Any, default: Callable[[Any], Any] | None = None) -> str | bytes:
    """A body compressed alone: JSON text if short, else a zlib BLOB."""
    text = json.dumps(value, default=default)
    if len(text) <= _PACK_OVER:
        return text
    # A 4 KiB window and small hash tables: bodies are a few KiB, and zlib.compress's
    # defaults spent 80 us clearing 256 KiB of state per body for the same size within 1 %.
    # Still a zlib stream: zlib.decompress reads the window size from its header.
    packer = zlib.compressobj(1, zlib.DEFLATED, 12, 4)
    return packer.compress(text.encode()) + packer.flush()


def unpack(stored: str | bytes, ref: bytes | None = None) -> Any:
    """A body as stored: JSON text (short, or written before compression), a zlib BLOB, or
    a BLOB against its reference (`unpack_ref`)."""
    if ref is not None:
        return unpack_ref(stored if isinstance(stored, bytes) else stored.encode(), ref)
    return json.loads(zlib.decompress(stored) if isinstance(stored, bytes) else stored)
