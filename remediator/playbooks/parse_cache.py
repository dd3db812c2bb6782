"""Parsed rule files, kept between start-ups: parsing YAML is most of the cost of loading
a thousand files, and between two start-ups almost none of them change.

An entry is found by the SHA-256 of a file's text, in a cache file whose name and header
carry the parser's version (this module's and source.py's code, PyYAML's version and C
extension), so a stale entry cannot be found: a changed file is a different key, a changed
parser a different cache. Beside what parsing produced it keeps what validating it found
(its problems, which of its playbooks have none) under the validator's context
(`validate.validation_context`: the configured sinks, the installed actions, the code of
the whole package and of the libraries it validates with), so the validator's work is
skipped too for a file whose text and context are the same; a file with a plugin's step is
validated at every load. The cache is `marshal`ed plain data, never pickle (unmarshalling
builds values and never runs code; unpickling can call anything); it is read only if this
process's user owns it and nobody else may write it (whoever could write it can already
write the store beside it, and rules that would pass validation, docs/architecture.md),
and only if its checksum matches: a file cut short or damaged is never unmarshalled.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import marshal
import os
import stat
import sys
import tempfile
from typing import Any

import yaml

from . import source as _source
from .models import LATER, Later
from .source import Problem, Source, load_source, packed_positions

log = logging.getLogger(__name__)

PREFIX = "rules-parse-cache."
SUFFIX, TMP_SUFFIX = ".marshal", ".tmp"
MAX_BYTES = 256 << 20  # read no cache file larger than this


def _parser_version() -> str:
    """What a cached parse depends on: this module's and source.py's code, PyYAML, and the
    Python that marshals it (marshal's format may change with the version)."""
    code = []
    for module in (__file__, _source.__file__):
        with open(module, "rb") as f:
            code.append(f.read())
    return hashlib.sha256(b"\0".join([
        *code, yaml.__version__.encode(), str(getattr(yaml, "__with_libyaml__", False)).encode(),
        sys.version.encode(), str(marshal.version).encode(),
    ])).hexdigest()[:16]


def cache_directory(setting: str, store_url: str) -> str | None:
    """Where `serve` keeps the cache (the `rules_cache` setting): `auto` is beside a SQLite
    store's file, none for PostgreSQL or a store in memory; empty is none."""
    if not setting:
        return None
    if setting != "auto":
        return setting
    if not store_url.startswith("sqlite://"):
        return None
    from ..store.sqlite import path_from_url

    path = path_from_url(store_url)
    return None if path == ":memory:" else os.path.dirname(path) or "."


# What validating a file found: its problems as (line, col, severity, message), and the
# index of each of its playbooks that has no error.
Checked = tuple[list[tuple[int, int, str, str]], list[int]]


class ParseCache:
    """`load` instead of `source.load_source`; `save` once a rule set has been read.

    The file is a line naming the parser's version, a line holding the SHA-256 of the rest,
    and the rest: a marshalled tuple (entries, context, checked). `entries` maps the SHA-256
    of each rule file's text to what parsing it produced, marshalled when it was parsed
    (whatever the validator does with the data afterwards is never written back); `checked`
    maps it to what validating it found under `context` (`validated`). Of a playbook, what
    matching needs is unmarshalled with its file, its steps, `on_resolved` and escalation when
    it is first asked for them (`later`), or when the file is validated (`unpack`)."""

    def __init__(self, directory: str):
        self.version = _parser_version()
        self.directory = directory
        self.path = os.path.join(directory, f"{PREFIX}{self.version}{SUFFIX}")
        self._old: dict[str, bytes] | None = None  # read at the first file (while the rule
        self._new: dict[str, bytes] = {}  # set loads, with the garbage collector paused)
        self._packed: dict[str, bytes] = {}  # what `load` left packed of the files found
        # What validation depends on besides a file's text (set by the validator); None:
        # validation results are neither read nor kept.
        self.context: str | None = None
        self._old_context = ""
        self._old_checked: dict[str, Checked] = {}
        self._new_checked: dict[str, Checked] = {}
        self.hits = self.misses = 0
        self.checked_hits = self.checked_misses = 0  # validation results found, kept anew

    def load(self, file: str, text: str) -> tuple[Source, str]:
        """What parsing `text` produces, and the key of its validation (`validated`)."""
        if self._old is None:
            self._old = self._read()
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        entry = self._old.get(digest)
        decoded = _decode(file, entry) if isinstance(entry, bytes) else None
        if decoded is None:
            self.misses += 1
            found = load_source(file, text)  # a syntax error raises: nothing to keep
            entry = _encode(found)
        else:
            self.hits += 1
            found, packed = decoded
            if packed is not None:
                self._packed[digest] = packed
        if entry is not None:
            self._new[digest] = entry
        return found, digest

    def validated(self, key: str, source: Source) -> Checked | None:
        """What validating the file of `key` (parsed as `source`) found under this
        `context`, if it was kept."""
        if self.context is None or self.context != self._old_context:
            return None
        found = self._old_checked.get(key)
        if not _is_checked(found, source):  # absent, or not what this code writes: validate
            return None
        self.checked_hits += 1
        self._new_checked[key] = found
        return found  # type: ignore[return-value]

    def later(self, key: str, i: int) -> functools.partial[Later] | None:
        """Where playbook `i` of the file of `key` finds what `load` left packed of it."""
        packed = self._packed.get(key)
        return functools.partial(unpacked, packed, i) if packed is not None else None

    def unpack(self, key: str, source: Source) -> None:
        """Put back into `source` (loaded for `key`) what `load` left packed: the validator
        reads all of it."""
        packed = self._packed.get(key)
        if packed is not None:
            for data, parts in zip(source.data["playbooks"], marshal.loads(packed), strict=True):
                data.update(parts)  # their keys are there, in the file's order

    def keep(self, key: str, checked: Checked) -> None:
        """Keep what validating the file of `key` found under this `context`."""
        if self.context is not None:
            self.checked_misses += 1
            self._new_checked[key] = checked

    def save(self) -> None:
        """Keep the entries of the files just read, if any of them was parsed or validated
        anew (a rule set's cache holds that rule set: removed files leave with the next
        change)."""
        old, new, self._old, self._new = self._old or {}, self._new, {}, {}  # garbage now
        self._packed = {}  # each playbook holds its own (`later`)
        checked, self._old_checked, self._new_checked = self._new_checked, {}, {}
        if not self.misses and new.keys() == old.keys() and not self.checked_misses:
            return
        body = marshal.dumps((new, self.context or "", checked))
        tmp = ""
        try:
            # A name no other start can hold: in a container serve is PID 1 every time, and
            # a start killed mid-write must not block the next one's (mkstemp: O_EXCL, 0600).
            fd, tmp = tempfile.mkstemp(TMP_SUFFIX, PREFIX, self.directory)
            with os.fdopen(fd, "wb") as f:
                f.write(b"%s\n%s\n" % (self.version.encode(), hashlib.sha256(body).hexdigest()
                                       .encode()))
                f.write(body)
            os.replace(tmp, self.path)
            for name in os.listdir(self.directory):  # another version's (or format's): never
                if name.startswith(PREFIX) and name.endswith((SUFFIX, ".jsonl", TMP_SUFFIX)) \
                        and os.path.join(self.directory, name) != self.path:  # read; cut short
                    os.unlink(os.path.join(self.directory, name))
        except OSError as exc:  # no such directory, read-only: start-up as before
            log.debug("rules parse cache not written: %s", exc)
            with contextlib.suppress(OSError):
                if tmp:
                    os.unlink(tmp)

    def _read(self) -> dict[str, bytes]:
        """The parse entries; the validation results and their context are kept aside."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return {}
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid()
                    or st.st_mode & 0o022 or st.st_size > MAX_BYTES):
                log.warning("ignoring the rules parse cache %s: not a file only this user "
                            "may write", self.path)
                return {}
            data = f.read()
        # The two header lines, and the rest seen in place (split, it was copied: 5 MB, a
        # millisecond or more, for 1 000 files).
        first = data.find(b"\n")
        second = data.find(b"\n", first + 1)
        body = memoryview(data)[second + 1:]
        if first < 0 or second < 0 or data[:first] != self.version.encode() or \
                data[first + 1:second] != hashlib.sha256(body).hexdigest().encode():
            return {}  # another parser's, or damaged: not one byte of it is unmarshalled
        try:
            entries, context, checked = marshal.loads(body)
        except (EOFError, ValueError, TypeError):
            return {}
        if not (isinstance(entries, dict) and isinstance(context, str)
                and isinstance(checked, dict)):
            return {}
        self._old_context, self._old_checked = context, checked
        return entries


def _is_checked(found: object, source: Source) -> bool:
    """Is `found` a validation result of the kind `keep` is given, for this file's data?"""
    if not (isinstance(found, tuple) and len(found) == 2 and isinstance(found[0], list)
            and isinstance(found[1], list)):
        return False
    playbooks = source.data.get("playbooks") if isinstance(source.data, dict) else None
    return all(isinstance(p, tuple) and len(p) == 4 and isinstance(p[0], int)
               and isinstance(p[1], int) and isinstance(p[2], str) and isinstance(p[3], str)
               for p in found[0]) and \
        all(isinstance(i, int) and isinstance(playbooks, list) and 0 <= i < len(playbooks)
            for i in found[1])


def _encode(found: Source) -> bytes | None:
    """What parsing produced, marshalled; None for data marshal cannot hold (a date) or
    positions that one string cannot (a key holding its separators, a tab or a newline)."""
    problems = [(p.line, p.col, p.severity, p.message) for p in found.problems]
    positions = packed_positions(found.positions)
    if positions.count("\t") != len(found.positions) or \
            positions.count("\n") != len(found.positions) + 1:
        return None
    try:
        return marshal.dumps((*_packed(found.data), positions, problems))
    except ValueError:
        return None


def _packed(data: Any) -> tuple[Any, bytes | None]:
    """The file's data with its playbooks' steps, `on_resolved` and escalation marshalled
    apart: a start-up unmarshals what matching and the checks across files need (5 of 12 us
    an entry of two playbooks), a playbook the rest when it is first asked for. Their keys
    stay, holding None until `unpack`, so that the data put back has the file's key order."""
    playbooks = data.get("playbooks") if isinstance(data, dict) else None
    if not isinstance(playbooks, list) or not all(isinstance(pb, dict) for pb in playbooks):
        return data, None
    heads = [{key: None if key in LATER else value for key, value in pb.items()}
             for pb in playbooks]
    return {**data, "playbooks": heads}, marshal.dumps(
        [{key: pb[key] for key in LATER if key in pb} for pb in playbooks])


def unpacked(packed: bytes, i: int) -> Later:
    """Playbook `i`'s steps, `on_resolved` and escalation, as `_packed` set them aside."""
    parts = marshal.loads(packed)[i]
    return parts.get("steps", []), parts.get("on_resolved", []), parts.get("escalation")


def _decode(file: str, entry: bytes) -> tuple[Source, bytes | None] | None:
    try:
        data, packed, positions, problems = marshal.loads(entry)
        if not isinstance(positions, str) or not (packed is None or isinstance(packed, bytes)):
            return None
        return Source(file, data, positions, [Problem(file, *p) for p in problems]), packed
    except (EOFError, TypeError, ValueError):  # not an entry this code wrote: parse instead
        return None
