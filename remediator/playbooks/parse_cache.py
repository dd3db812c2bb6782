"""Parsed rule files, kept between start-ups: parsing YAML is most of the cost of loading
a thousand files, and between two start-ups almost none of them change.

It caches parsing only. An entry is found by the SHA-256 of a file's text, in a cache file
whose name and header carry the parser's version (this module's and source.py's code,
PyYAML's version and C extension), so a stale entry cannot be found: a changed
file is a different key, a changed parser a different cache. Everything taken from it goes
through the whole validator, exactly like a freshly parsed file (the validator's result
depends on plugins and configuration, so it is never cached). The cache is JSON, never
pickle, and it is read only if this process's user owns it and nobody else may write it:
whoever could write it can already write the store beside it (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
import tempfile

import yaml

from . import source as _source
from .source import Problem, Source, load_source, packed_positions

log = logging.getLogger(__name__)

PREFIX = "rules-parse-cache."
TMP_SUFFIX = ".tmp"
MAX_BYTES = 256 << 20  # read no cache file larger than this


def _parser_version() -> str:
    """What a cached parse depends on: this module's and source.py's code, and PyYAML."""
    code = []
    for module in (__file__, _source.__file__):
        with open(module, "rb") as f:
            code.append(f.read())
    return hashlib.sha256(b"\0".join([
        *code, yaml.__version__.encode(), str(getattr(yaml, "__with_libyaml__", False)).encode(),
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


class ParseCache:
    """`load` instead of `source.load_source`; `save` once a rule set has been read.

    The file is a header line (the parser's version) and one line per rule file: the
    SHA-256 of its text, a space, and what parsing it produced as JSON, written when it was
    parsed (whatever the validator does with the data afterwards is never written back)."""

    def __init__(self, directory: str):
        self.version = _parser_version()
        self.directory = directory
        self.path = os.path.join(directory, f"{PREFIX}{self.version}.jsonl")
        self._old: dict[str, str] | None = None  # read at the first file (while the rule
        self._new: dict[str, str] = {}  # set loads, with the garbage collector paused)
        self.hits = self.misses = 0

    def load(self, file: str, text: str) -> Source:
        if self._old is None:
            self._old = self._read()
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        line = self._old.get(digest)
        found = _decode(file, line) if line is not None else None
        if found is None:
            self.misses += 1
            found = load_source(file, text)  # a syntax error raises: nothing to keep
            line = _encode(found)
        else:
            self.hits += 1
        if line is not None:
            self._new[digest] = line
        return found

    def save(self) -> None:
        """Keep the entries of the files just read, if any of them was parsed anew (a rule
        set's cache holds that rule set: removed files leave with the next change)."""
        old, new, self._old, self._new = self._old or {}, self._new, {}, {}  # garbage now
        if not self.misses and new.keys() == old.keys():
            return
        body = "".join([self.version, "\n", *(f"{k} {v}\n" for k, v in new.items())])
        tmp = ""
        try:
            # A name no other start can hold: in a container serve is PID 1 every time, and
            # a start killed mid-write must not block the next one's (mkstemp: O_EXCL, 0600).
            fd, tmp = tempfile.mkstemp(TMP_SUFFIX, PREFIX, self.directory)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(body)
            os.replace(tmp, self.path)
            for name in os.listdir(self.directory):  # another version's: never read again;
                if name.startswith(PREFIX) and name.endswith((".jsonl", TMP_SUFFIX)) \
                        and os.path.join(self.directory, name) != self.path:  # or cut short
                    os.unlink(os.path.join(self.directory, name))
        except OSError as exc:  # no such directory, read-only: start-up as before
            log.debug("rules parse cache not written: %s", exc)
            with contextlib.suppress(OSError):
                if tmp:
                    os.unlink(tmp)

    def _read(self) -> dict[str, str]:
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
            lines = f.read().decode("utf-8", "replace").split("\n")
        if lines[0] != self.version:
            return {}
        return dict(line.split(" ", 1) for line in lines[1:] if " " in line)


def _encode(found: Source) -> str | None:
    """One line of JSON, or None for data JSON cannot hold exactly (a date, binary) or
    positions that one string cannot (a key holding its separators, a tab or a newline)."""
    problems = [[p.line, p.col, p.severity, p.message] for p in found.problems]
    positions = packed_positions(found.positions)
    if positions.count("\t") != len(found.positions) or \
            positions.count("\n") != len(found.positions) + 1:
        return None
    try:
        return json.dumps([found.data, positions, problems],
                          separators=(",", ":"), allow_nan=True)
    except (TypeError, ValueError):
        return None


def _decode(file: str, line: str) -> Source | None:
    try:
        data, positions, problems = json.loads(line)
        if not isinstance(positions, str):
            return None
        return Source(file, data, positions, [Problem(file, *p) for p in problems])
    except (TypeError, ValueError):  # not a line this code wrote: parse the file instead
        return None
