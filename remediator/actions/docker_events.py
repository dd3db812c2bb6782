"""How an exited container ended, asked of the Docker Engine's own record: its events.

An exit code alone cannot tell a crash from a stop. `docker stop` / `docker compose stop` sends
the stop signal, waits its timeout (compose's default: 10 s), then SIGKILLs: a shutdown that
outlasts it (the libervia runbook allows 30 s; a Node PID 1 that ignores SIGTERM never ends
otherwise) exits 137, as a process killed by the kernel does. The Engine logs every signal it
sends: a stop is `kill` (the stop signal) [`kill` (9)] `die` `stop`, `docker kill` is `kill` (9)
`die`, while a process that dies on its own, or is SIGKILLed by anything but the Engine,
leaves only `die` (and `oom` for its OOM killer).

The Engine keeps its last 256 events in memory (verified against 20.10; a restart of dockerd
forgets them all): on a busy host an exit minutes old may have no record left. A 137 without
one is `unknown`, never a crash, so a playbook does not start a container that someone may be
in the middle of an upgrade, rollback or restore with.
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from typing import Any

from .base import ActionError, TransientError
from .docker_client import call

# A process that handles the stop signal exits 0 (PostgreSQL's, Redis's, a graceful Node
# server's shutdown); one the signal ends, 143 (128 + SIGTERM). Told without asking the Engine.
STOP_EXIT_CODES = (0, 143)
SIGKILLED = 137  # 128 + 9: a stop past its timeout, a `docker kill`, or the kernel
# What counts as the same life of the container: a stop's signal comes up to its timeout
# before the exit (compose's stop_grace_period may be minutes), the `stop` event just after it.
LOOKBACK = 600.0
AFTER = 2.0
# Signals sent to a running container that are not meant to end it (reload, log reopening).
_RELOAD_SIGNALS = frozenset({signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH})

# exit_cause values; `stopped` ones are left to whoever stopped the container
STOP, KILL, CRASH, OOM, UNKNOWN = "stop", "kill", "crash", "oom", "unknown"
LEFT_ALONE = (STOP, KILL, UNKNOWN)


def by_code(state: dict[str, Any]) -> tuple[str, str]:
    """What the exit code and OOMKilled alone say (no record of the Engine's)."""
    code = state["exit_code"]
    if state["oom_killed"]:
        return OOM, "OOMKilled: the kernel's OOM killer ended it"
    if code in STOP_EXIT_CODES:
        return STOP, f"exit code {code}, as a stop signal leaves a process (not asked of the Engine)"
    if code == SIGKILLED:
        return UNKNOWN, ("exit code 137 (SIGKILL): a stop that outlasted its timeout, a docker "
                         "kill, or the kernel; the Engine's events do not tell which")
    return CRASH, f"exit code {code}"


async def exit_cause(backends: Any, info: dict[str, Any], state: dict[str, Any]
                     ) -> tuple[str, str]:
    """(cause, evidence) of an exited container: `stop` (docker stop, compose stop, or an exit
    code a stop leaves), `kill` (docker kill / compose kill: deliberate, as Docker's own
    restart policies count it), `oom`, `crash`, or `unknown` (a SIGKILL the Engine no longer
    has a record of)."""
    cause, evidence = by_code(state)
    if cause in (OOM, STOP):
        return cause, evidence
    finished = _nanoseconds(state.get("finished_at") or "")
    if finished is None:
        return cause, f"{evidence}; its exit time is unreadable"
    try:
        events = await call(
            backends, f"events of container {state['name']}", "events",
            since=_stamp(finished - int(LOOKBACK * 1e9)), until=_stamp(finished + int(AFTER * 1e9)),
            filters={"type": ["container"], "container": [info["Id"]],
                     "event": ["start", "kill", "die", "stop"]}, decode=True)
    except TransientError:
        raise  # the step's retries, then "the Engine could not be asked": never a guess
    except ActionError as exc:  # refused (a socket proxy without /events): the code says
        return cause, f"{evidence}; the Engine's events could not be read ({exc})"
    return _read(events, state, cause, evidence, finished)


def _read(events: list[dict[str, Any]], state: dict[str, Any], cause: str, evidence: str,
          finished: int) -> tuple[str, str]:
    die = None
    for at, event in enumerate(events):
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        if (event.get("Action") == "die" and attributes.get("exitCode") == str(state["exit_code"])
                and abs(int(event.get("timeNano") or 0) - finished) <= AFTER * 1e9):
            die = at  # the exit the state shows
    later = [e for e in events[die + 1:] if e.get("Action") in ("stop", "start")][:1] \
        if die is not None else []
    if die is None or (later and later[0]["Action"] == "start"):
        return cause, (f"{evidence}; no record of this exit in the Engine's events (it keeps "
                       "its last 256)")
    life = events[:die + 1]
    starts = [at for at, e in enumerate(life) if e.get("Action") == "start"]
    life = life[starts[-1] + 1:] if starts else life
    record = "Engine events: " + ", ".join(_describe(e) for e in life + later)
    sent = [e for e in life if e.get("Action") == "kill" and _signal(e) not in _RELOAD_SIGNALS]
    if later:
        return STOP, f"stopped through the Engine's API (docker stop, compose stop); {record}"
    if sent:
        return KILL, f"killed through the Engine's API (docker kill, compose kill); {record}"
    return CRASH, f"exit code {state['exit_code']}, no stop or kill sent by the Engine; {record}"


def _describe(event: dict[str, Any]) -> str:
    attributes = (event.get("Actor") or {}).get("Attributes") or {}
    if event.get("Action") == "kill":
        return f"kill (signal {attributes.get('signal')})"
    if event.get("Action") == "die":
        return f"die (exit code {attributes.get('exitCode')})"
    return str(event.get("Action"))


def _signal(event: dict[str, Any]) -> int | None:
    try:
        return int(((event.get("Actor") or {}).get("Attributes") or {}).get("signal"))
    except (TypeError, ValueError):
        return None


def _nanoseconds(stamp: str) -> int | None:
    """An Engine time (RFC 3339, nanoseconds, UTC: 2026-12-02T01:38:22.592925933Z) in ns."""
    base, _, fraction = stamp.rstrip("Z").partition(".")
    try:
        seconds = datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
        nanos = int((fraction + "000000000")[:9]) if fraction else 0
    except ValueError:
        return None
    return int(seconds.timestamp()) * 1_000_000_000 + nanos


def _stamp(nanoseconds: int) -> str:
    """The Engine's `since`/`until` form: seconds.nanoseconds."""
    return f"{nanoseconds // 1_000_000_000}.{nanoseconds % 1_000_000_000:09d}"


def stopped(state: dict[str, Any]) -> bool:
    """Exited, and not to be started behind whoever may have stopped it: stopped or killed
    through the Engine (a runbook's shutdown, upgrade, rollback or restore), an exit code a
    stop leaves, or a SIGKILL whose cause is unknown; never an OOM kill or a crash. Docker's
    own restart policies make the same distinction (`unless-stopped`, and `docker kill`
    counts as stopped for them too). `exit_cause` is docker.inspect's; without it, the exit
    code says."""
    if state["status"] != "exited":
        return False
    return (state.get("exit_cause") or by_code(state)[0]) in LEFT_ALONE


def crashed(state: dict[str, Any]) -> bool:
    """Down by a fault, which a restart repairs: exited otherwise than `stopped` (a crash, an
    OOM kill), dead, created and never started, restarting (crash-looping), or unhealthy.
    Not a healthcheck still `starting` (a boot in progress, which a restart would start
    over)."""
    return bool(state["oom_killed"] or state["restarting"] or state["health"] == "unhealthy"
                or state["status"] in ("dead", "created")
                or (state["status"] == "exited" and not stopped(state)))
