"""Loading a rule set costs per distinct text, not per playbook: a thousand files repeat the
same templates and matchers (speed itself is measured in bench/, never asserted here)."""

from __future__ import annotations

import gc
import hashlib
import marshal
import os
import threading
from pathlib import Path

from remediator import templating
from remediator.playbooks import source
from remediator.playbooks.matchers import parse_matcher
from remediator.playbooks.parse_cache import ParseCache, cache_directory
from remediator.playbooks.validate import Validation, validate_paths

PLAYBOOK = """\
playbooks:
  - name: restart-{i}
    match:
      alertname: Down{i}
      matchers: ['namespace=~"shop|pay"']
    target: {{kind: deployment, namespace: "{{{{ labels.namespace }}}}", name: "{{{{ labels.app }}}}"}}
    guards:
      cooldown: 10m
      precondition: {{promql: 'up{{job="{{{{ labels.job | promql_str }}}}"}} == 0'}}
    steps:
      - name: check
        action: prometheus.query
        params: {{query: 'up{{namespace="{{{{ labels.namespace | promql_str }}}}"}}'}}
      - name: restart
        action: http.request
        when: steps.check.result.value > 0
        params: {{url: "https://deploy.example/restart/{{{{ labels.app }}}}", method: POST}}
"""


def _write(directory: Path, count: int) -> Path:
    directory.mkdir()
    for i in range(count):
        (directory / f"pb{i:03d}.yaml").write_text(PLAYBOOK.format(i=i), encoding="utf-8")
    return directory


def _parses(paths: list[Path]) -> int:
    """Template texts analysed (parsed by Jinja) while validating `paths` from cold caches."""
    templating._analyse.cache_clear()
    templating._unescaped_promql.cache_clear()
    result = validate_paths([str(p) for p in paths])
    assert result.ok, result.problems
    return (templating._analyse.cache_info().misses
            + templating._unescaped_promql.cache_info().misses)


def test_templates_are_parsed_once_per_text_not_once_per_playbook(tmp_path):
    one = _parses([_write(tmp_path / "one", 1)])
    assert one >= 4  # the target's two, the when, the query; the precondition's splices
    assert _parses([_write(tmp_path / "many", 40)]) == one


def test_what_is_cached_is_bounded():
    for cached in (templating._analyse, templating._unescaped_promql, parse_matcher):
        assert cached.cache_info().maxsize is not None
    for i in range(70_000):  # more distinct plain scalars than the resolver keeps
        source.load_source("x.yaml", f"key: value{i}\n")
    assert len(source._RESOLVED) <= 65536


def test_a_failed_load_leaves_the_garbage_collector_running(tmp_path):
    (tmp_path / "bad.yaml").write_text("playbooks: [{name: x, steps: [", encoding="utf-8")
    (tmp_path / "worse.yaml").write_bytes(b"\xff\xfe not utf-8")
    assert not validate_paths([str(tmp_path)]).ok
    assert gc.isenabled()


def test_a_load_in_another_thread_leaves_the_collector_on_for_the_event_loop():
    """A reload validates in a thread while `serve` answers: the collector's switch is the
    whole process's, so pausing it there left the loop's garbage waiting for the load."""
    from remediator import collector

    seen: list[bool] = []

    def load() -> None:
        with collector.paused():
            seen.append(gc.isenabled())

    thread = threading.Thread(target=load)
    thread.start()
    thread.join()
    with collector.paused():  # start-up's load, on the main thread, pauses it
        seen.append(gc.isenabled())
    assert seen == [True, False] and gc.isenabled()


# --- the parse cache (serve's `rules_cache`) ------------------------------------------------

def _load(paths: list[Path], cache_dir: Path, make: bool = True) -> tuple[ParseCache, Validation]:
    if make:
        cache_dir.mkdir(exist_ok=True, parents=True)
    cache = ParseCache(str(cache_dir))
    return cache, validate_paths([str(p) for p in paths], cache=cache)


def _same(a: Validation, b: Validation) -> None:
    assert a.problems == b.problems  # the same warnings at the same file:line:col
    assert a.playbooks == b.playbooks


def _checks(monkeypatch) -> list[str]:
    """The names of the playbooks the validator checks from now on."""
    from remediator.playbooks import validate

    checked: list[str] = []
    real = validate._check_playbook
    monkeypatch.setattr(validate, "_check_playbook",
                        lambda src, at, data, *a: checked.append(data["name"]) or real(
                            src, at, data, *a))
    return checked


def test_a_second_load_parses_and_validates_nothing_and_finds_the_same(tmp_path, monkeypatch):
    rules = _write(tmp_path / "rules", 20)
    (rules / "warns.yaml").write_text(PLAYBOOK.format(i=99).replace(" | promql_str", ""))
    fresh = validate_paths([str(rules)])
    checked = _checks(monkeypatch)
    first, one = _load([rules], tmp_path / "cache")
    assert (first.hits, first.misses, first.checked_hits, first.checked_misses) == (0, 21, 0, 21)
    assert len(checked) == 21
    templating._analyse.cache_clear()
    second, two = _load([rules], tmp_path / "cache")
    assert (second.hits, second.misses, second.checked_hits, second.checked_misses) == (
        21, 0, 21, 0)
    assert len(checked) == 21 and templating._analyse.cache_info().misses == 0  # not again
    _same(fresh, one)
    _same(fresh, two)
    assert [p.line for p in fresh.problems] == [9, 13]  # located from the cache too
    # Each file's problems are kept in order: sorting the rule set's then finds them so.
    [kept] = (tmp_path / "cache").glob("rules-parse-cache.*.marshal")
    _, _, results = marshal.loads(kept.read_bytes().split(b"\n", 2)[2])
    assert sorted(len(problems) for problems, _ in results.values())[-1] == 2
    assert all(problems == sorted(problems) for problems, _ in results.values())


def test_steps_found_in_the_cache_are_unmarshalled_when_asked_for_or_validated(
        tmp_path, monkeypatch):
    """A start-up unmarshals what matching needs of each file; a playbook's steps,
    `on_resolved` and escalation wait for their first use, or for the file's validation
    (another context: they are put back, and validated like a fresh parse's)."""
    from remediator.playbooks import validate

    rules = _write(tmp_path / "rules", 3)
    (rules / "pb001.yaml").write_text(PLAYBOOK.format(i=1).replace(
        "    guards:", "    escalation: {sinks: [files], next_steps: [page]}\n    guards:"))
    fresh = validate_paths([str(rules)])
    _load([rules], tmp_path / "cache")
    cache, found = _load([rules], tmp_path / "cache")
    assert cache.checked_hits == 3
    assert all(callable(vars(pb)["_later"]) for pb in found.playbooks)  # still packed
    _same(fresh, found)
    assert found.playbooks[1].escalation.next_steps == ("page",)
    checked = _checks(monkeypatch)
    monkeypatch.setattr(validate, "_code_stamp", lambda: "other code")
    cache, again = _load([rules], tmp_path / "cache")
    assert (cache.hits, cache.checked_hits, len(checked)) == (3, 0, 3)  # parsed, not checked
    _same(fresh, again)
    refused = validate_paths([str(rules)], set(), ParseCache(str(tmp_path / "cache")))
    assert [p.message[:35] for p in refused.problems] == ["escalation sink 'files' is not conf"]


def test_a_validation_result_is_kept_only_for_its_context(tmp_path, monkeypatch):
    """What the validator found is reused only for the same text under the same sinks,
    installed actions, code and libraries: each change validates every file again."""
    from remediator.playbooks import validate

    rules = _write(tmp_path / "rules", 2)
    (rules / "pb000.yaml").write_text(PLAYBOOK.format(i=0).replace(
        "    guards:", "    escalation: {sinks: [files]}\n    guards:"))
    checked = _checks(monkeypatch)

    def load(sinks: set[str] | None) -> Validation:
        cache = ParseCache(str(tmp_path / "cache"))
        return validate_paths([str(rules)], sinks, cache)

    (tmp_path / "cache").mkdir()
    assert load({"files"}).ok and len(checked) == 2
    assert load({"files"}).ok and len(checked) == 2
    refused = load(set())  # the sink is no longer configured
    assert len(checked) == 4 and [p.message[:35] for p in refused.problems] == [
        "escalation sink 'files' is not conf"]
    assert load(None).ok and len(checked) == 6  # lint's: sinks not checked
    assert load(None).ok and len(checked) == 6
    monkeypatch.setitem(validate.ACTIONS, "example.other", validate.ACTIONS["log"])
    assert load(None).ok and len(checked) == 8  # another action installed
    monkeypatch.setattr(validate, "_code_stamp", lambda: "other code")
    assert load(None).ok and len(checked) == 10
    monkeypatch.setattr(validate, "_library_stamp", lambda: "another Jinja or RE2")
    assert load(None).ok and len(checked) == 12
    assert load(None).ok and len(checked) == 12


def test_the_code_stamp_changes_with_any_module_of_the_package(tmp_path):
    from remediator.playbooks import validate

    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    for name in ("a.py", "sub/b.py", "sub/data.txt"):
        (package / name).write_text("x = 1\n")
    stamp = validate._code_stamp.__wrapped__
    first = stamp(str(package))
    (package / "sub/data.txt").write_text("not code")
    assert stamp(str(package)) == first
    (package / "sub/b.py").write_text("x = 2\n")  # the same size
    os.utime(package / "sub/b.py", ns=(1, 1))
    assert stamp(str(package)) not in (first, None)
    (package / "sub/c.py").write_text("")
    assert len({first, stamp(str(package)), stamp(str(package / "sub"))}) == 3
    assert stamp(str(tmp_path / "missing")) is None


def test_the_code_stamp_changes_with_a_module_rewritten_at_its_size_and_mtime(tmp_path):
    """A reproducible build (SOURCE_DATE_EPOCH, Nix) gives every module of every release
    the same mtime, and its hash-checked .pyc files still load the new code: a validator
    changed in place (`<` to `>`) must not find the old validator's results."""
    from remediator.playbooks import validate

    module = tmp_path / "pkg" / "a.py"
    module.parent.mkdir()
    module.write_text("ok = n < 3\n")
    os.utime(module, ns=(315532800 * 10**9,) * 2)
    first = validate._code_stamp.__wrapped__(str(module.parent))
    module.write_text("ok = n > 3\n")
    os.utime(module, ns=(315532800 * 10**9,) * 2)
    assert validate._code_stamp.__wrapped__(str(module.parent)) not in (first, None)


def test_a_file_with_a_plugins_step_is_validated_at_every_load(tmp_path, monkeypatch):
    """A plugin's checks are not ours to call pure (as `_check_step` says): its files'
    results are never kept."""
    rules = _write(tmp_path / "rules", 2)
    (rules / "plugin.yaml").write_text(PLAYBOOK.format(i=7).replace(
        "action: http.request", "action: example.open_ticket").replace(
        '{url: "https://deploy.example/restart/{{ labels.app }}", method: POST}',
        '{tracker: "https://tickets.example/new", title: down}'))
    checked = _checks(monkeypatch)
    for _ in range(3):
        cache, result = _load([rules], tmp_path / "cache")
        assert result.ok, result.problems
    assert checked == ["restart-0", "restart-1", "restart-7", "restart-7", "restart-7"]
    assert cache.checked_hits == 2


def test_a_changed_file_is_parsed_again_and_an_invalid_change_refused(tmp_path):
    rules = _write(tmp_path / "rules", 3)
    _load([rules], tmp_path / "cache")
    (rules / "pb001.yaml").write_text(PLAYBOOK.format(i=1).replace("cooldown: 10m", "cooldown: 1h"))
    cache, result = _load([rules], tmp_path / "cache")
    assert (cache.hits, cache.misses) == (2, 1)
    assert result.ok and result.playbooks[1].guards["cooldown"] == "1h"
    (rules / "pb001.yaml").write_text(PLAYBOOK.format(i=1).replace("    guards:\n", "    gaurds:\n"))
    cache, result = _load([rules], tmp_path / "cache")
    assert cache.misses == 1 and not result.ok
    assert any("gaurds" in p.message for p in result.problems)


def test_files_that_swap_texts_or_change_within_their_size_and_mtime_load_as_written(tmp_path):
    """An entry is found by what a file says, never by its name, size or modification time:
    two files that swap their texts, and an edit of the same size within the same
    timestamp (a deploy tool restoring mtimes), load as a fresh parse reads them."""
    rules = _write(tmp_path / "rules", 3)
    _load([rules], tmp_path / "cache")
    a, b, c = (rules / f"pb{i:03d}.yaml" for i in range(3))
    stamps = {p: os.stat(p) for p in (a, b, c)}
    # the same size: restart-0 <-> restart-1 keep their lengths; 10m -> 90m
    a_text, b_text = a.read_text(), b.read_text()
    a.write_text(b_text)
    b.write_text(a_text)
    c.write_text(c.read_text().replace("cooldown: 10m", "cooldown: 90m"))
    for p, st in stamps.items():
        assert os.stat(p).st_size == st.st_size
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    cache, result = _load([rules], tmp_path / "cache")
    assert (cache.hits, cache.misses) == (2, 1)
    _same(validate_paths([str(rules)]), result)
    assert [(pb.name, pb.file) for pb in result.playbooks] == [
        ("restart-1", str(a)), ("restart-0", str(b)), ("restart-2", str(c))]
    assert result.playbooks[2].guards["cooldown"] == "90m"


def test_a_cache_another_user_could_write_is_not_read(tmp_path):
    rules = _write(tmp_path / "rules", 2)
    cache, _ = _load([rules], tmp_path / "cache")
    os.chmod(cache.path, 0o666)
    again, result = _load([rules], tmp_path / "cache")
    assert (again.hits, again.misses) == (0, 2) and result.ok


def test_a_damaged_or_foreign_cache_is_never_unmarshalled_and_is_rebuilt(tmp_path):
    rules = _write(tmp_path / "rules", 2)
    cache, _ = _load([rules], tmp_path / "cache")
    written = Path(cache.path).read_bytes()
    header, digest, body = written.split(b"\n", 2)
    flipped = bytearray(body)
    flipped[len(body) // 2] ^= 1
    for damaged in (written[:-7],  # a write cut short
                    b"\n".join([header, digest, bytes(flipped)]),  # a bit flipped
                    b"\n".join([b"another-parser", digest, body]),
                    b"\n".join([header, hashlib.sha256(b"[]").hexdigest().encode(), b"[]"]),
                    written.replace(b"\n", b" ", 1)):
        Path(cache.path).write_bytes(damaged)
        again, result = _load([rules], tmp_path / "cache")
        assert (again.hits, again.misses) == (0, 2) and result.ok
        rebuilt, result = _load([rules], tmp_path / "cache")
        assert (rebuilt.hits, rebuilt.misses) == (2, 0) and result.ok
    # Checksummed, unmarshalled, but not what this code writes: those files are parsed,
    # and validated.
    entries, context, checked = marshal.loads(body)
    first = next(iter(entries))
    for entry, found in ((b"\xff", None), (marshal.dumps([1, 2]), [[], [0]]),
                         (marshal.dumps(("data", 1, [])), ([(1, 1, "error")], [0])),
                         (entries[first], ([], ["0"])), (entries[first], ([], [7]))):
        body = marshal.dumps(({**entries, first: entry}, context, {**checked, first: found}))
        Path(cache.path).write_bytes(b"\n".join([
            header, hashlib.sha256(body).hexdigest().encode(), body]))
        again, result = _load([rules], tmp_path / "cache")
        assert (again.hits, again.checked_hits) in ((1, 1), (2, 1)) and result.ok
        assert len(result.playbooks) == 2
    for body in (marshal.dumps(entries), marshal.dumps((entries, None, checked))):
        Path(cache.path).write_bytes(b"\n".join([
            header, hashlib.sha256(body).hexdigest().encode(), body]))
        again, result = _load([rules], tmp_path / "cache")
        assert (again.hits, again.checked_hits) == (0, 0) and result.ok


def test_a_missing_cache_directory_loads_as_without_one_and_is_not_made(tmp_path):
    rules = _write(tmp_path / "rules", 2)
    cache, result = _load([rules], tmp_path / "missing", make=False)
    assert result.ok and cache.misses == 2
    assert not (tmp_path / "missing").exists()


def test_the_cache_lives_beside_a_sqlite_store_unless_told_otherwise():
    assert cache_directory("auto", "sqlite:///data/r.db") == "data"
    assert cache_directory("auto", "sqlite:///r.db") == "."
    assert cache_directory("auto", "sqlite://") is None
    assert cache_directory("auto", "postgresql://db/remediator") is None
    assert cache_directory("", "sqlite:///r.db") is None
    assert cache_directory("/cache", "postgresql://db/remediator") == "/cache"


# YAML keys that are not strings (ints, bools, nulls, floats), and keys equal only once made
# strings: JSON could hold them differently, so each is checked against a fresh parse.
ODD_KEYS = """\
playbooks:
  - name: odd-keys
    match:
      alertname: Odd
      200: "x"
      true: "y"
    steps:
      - name: call
        action: http.request
        params:
          url: "https://deploy.example/restart"
          headers: {1: a, "1": b, null: c, 1.5: d, 0x10: e}
          json: {when: ~, ratio: .inf, neg: -0.0, big: 123456789012345678901234567890}
"""


def test_a_cached_file_validates_like_a_fresh_one_whatever_its_keys(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "odd.yaml").write_text(ODD_KEYS, encoding="utf-8")
    (rules / "ok.yaml").write_text(PLAYBOOK.format(i=1).replace(
        "cooldown: 10m", "cooldown: 10m\n      true: 1\n      200: 2"), encoding="utf-8")
    fresh = validate_paths([str(rules)])
    assert not fresh.ok and any("duplicate key '1'" in p.message for p in fresh.problems)
    first, one = _load([rules], tmp_path / "cache")
    second, two = _load([rules], tmp_path / "cache")
    assert first.misses == 2 and second.hits == 2  # both were written, both read back
    _same(fresh, one)
    _same(fresh, two)


def test_a_write_cut_short_does_not_disable_the_cache(tmp_path):
    """In a container serve is PID 1 at every start: a start killed while writing the cache
    left a temporary file under the very name the next start would create."""
    rules = _write(tmp_path / "rules", 2)
    cache, _ = _load([rules], tmp_path / "cache")
    Path(f"{cache.path}.{os.getpid()}.tmp").write_text("cut short")
    for name in os.listdir(tmp_path / "cache"):  # as if no start had finished its write
        if name.endswith(".marshal"):
            os.unlink(tmp_path / "cache" / name)
    _load([rules], tmp_path / "cache")
    again, result = _load([rules], tmp_path / "cache")
    assert (again.hits, again.misses) == (2, 0) and result.ok
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [Path(cache.path).name]


def test_a_key_holding_the_position_separators_is_located_like_a_fresh_parse(tmp_path):
    """Cached positions are one string of "\\n" path "\\t" position: a key holding a tab made
    a problem at its sibling `name` read another entry's text as its position."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "tab.yaml").write_text('playbooks:\n  - "name\\tx": 1\n    "a\\nb": 2\n'
                                    '    name: "Bad Name!"\n    match: {alertname: A}\n'
                                    '    steps: []\n', encoding="utf-8")
    fresh = validate_paths([str(rules)])
    assert [p.line for p in fresh.problems if "not a name" in p.message] == [4]
    for _ in range(2):
        _, cached = _load([rules], tmp_path / "cache")
        _same(fresh, cached)


def test_a_step_repeated_across_files_is_checked_once_and_located_in_each(tmp_path, monkeypatch):
    from remediator.playbooks import validate

    checked = []
    real = validate.check_params
    monkeypatch.setattr(validate, "check_params",
                        lambda *a, **k: checked.append(a[1]) or real(*a, **k))
    rules = tmp_path / "rules"
    rules.mkdir()
    for i in range(3):  # the same steps, at other lines; one splicing a label into PromQL
        (rules / f"pb{i}.yaml").write_text("#\n" * i + PLAYBOOK.format(i=i).replace(
            "namespace | promql_str", "namespace"), encoding="utf-8")
    result = validate_paths([str(rules)])
    assert len(checked) == 2  # check and restart, once each
    assert [(p.file[-8:], p.line) for p in result.problems if "PromQL" in p.message] == [
        ("pb0.yaml", 13), ("pb1.yaml", 14), ("pb2.yaml", 15)]
    # The same step, where the step it reads does not run before it: checked again, refused.
    (rules / "pb3.yaml").write_text(PLAYBOOK.format(i=3).replace("name: check", "name: probe"),
                                    encoding="utf-8")
    result = validate_paths([str(rules)])
    assert [p.file[-8:] for p in result.problems if "'check', which is not" in p.message] == [
        "pb3.yaml"]


def test_what_marshal_cannot_hold_is_parsed_at_every_start(tmp_path):
    """A date (YAML's implicit timestamp) is not plain data to marshal: that file is parsed
    every time; binary is kept like any other value."""
    rules = tmp_path / "rules"
    rules.mkdir()
    for i, (name, value) in enumerate((("date", "2026-11-29"), ("binary", "!!binary aGVsbG8="))):
        (rules / f"{name}.yaml").write_text(PLAYBOOK.format(i=i).replace(
            "method: POST", f"method: POST, json: {{v: {value}}}"), encoding="utf-8")
    fresh = validate_paths([str(rules)])
    assert fresh.ok, fresh.problems
    _load([rules], tmp_path / "cache")
    cache, cached = _load([rules], tmp_path / "cache")
    assert (cache.hits, cache.misses) == (1, 1)
    _same(fresh, cached)


def test_a_file_of_the_wrong_shape_is_a_problem_with_the_cache_too(tmp_path):
    """Whether a file's result may be kept is asked of whatever it holds: an action written
    as a list, a playbook that is not a mapping are the shape's errors, as without the
    cache, never a TypeError or AttributeError out of the validator (serve's start or
    reload)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bad.yaml").write_text(PLAYBOOK.format(i=1).replace(
        "action: http.request", "action: [http.request]"))
    (rules / "worse.yaml").write_text("playbooks:\n  - just a string\n")
    expected = validate_paths([str(rules)]).problems
    assert {p.file for p in expected} == {str(rules / "bad.yaml"), str(rules / "worse.yaml")}
    for _ in range(2):
        assert _load([rules], tmp_path / "cache")[1].problems == expected


def test_a_file_is_read_as_text_mode_reads_it(tmp_path):
    """Rule files are read as bytes and decoded (a text file object was a fifth of each
    file's start-up): line endings and refusals are what `open(..., encoding="utf-8")` gives,
    positions in a CRLF file included."""
    from remediator.playbooks.validate import read_text

    def text_mode(file: Path) -> tuple[str, str]:
        try:
            with open(file, encoding="utf-8") as f:
                return "text", f.read()
        except (OSError, UnicodeDecodeError) as exc:
            return type(exc).__name__, str(exc)

    def ours(file: Path) -> tuple[str, str]:
        try:
            return "text", read_text(str(file))
        except (OSError, UnicodeDecodeError) as exc:
            return type(exc).__name__, str(exc)

    samples = {"crlf": b"a: 1\r\nb: 2\r\n", "cr": b"a: 1\rb: 2\r", "mixed": b"a\r\r\nb\n\rc\r",
               "bom": "\ufeffa: \u00e9\r\n".encode(), "bad": b"a: 1\n" * 3000 + b"b: \xff\n",
               "cut": "a: \u00e9".encode()[:-1], "empty": b""}
    for name, data in samples.items():
        (tmp_path / f"{name}.yaml").write_bytes(data)
    for file in [*tmp_path.iterdir(), tmp_path / "absent.yaml", tmp_path]:
        assert ours(file) == text_mode(file), file.name
    (tmp_path / "rules").mkdir()
    playbook = PLAYBOOK.format(i=1) + "    bogus: 1\n"
    (tmp_path / "rules" / "unix.yaml").write_text(playbook, encoding="utf-8")
    (tmp_path / "rules" / "dos.yaml").write_bytes(playbook.replace("\n", "\r\n").encode())
    (tmp_path / "rules" / "bad.yaml").write_bytes(b"playbooks: \xff\n")
    found = validate_paths([str(tmp_path / "rules")]).problems
    assert [(p.line, p.col, p.message) for p in found if p.file.endswith("unix.yaml")] == \
        [(p.line, p.col, p.message) for p in found if p.file.endswith("dos.yaml")] != []
    [bad] = [p for p in found if p.file.endswith("bad.yaml")]
    assert bad.message == f"cannot read: {text_mode(tmp_path / 'rules' / 'bad.yaml')[1]}"
