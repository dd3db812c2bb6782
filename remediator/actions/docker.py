"""Docker actions: what on-call does by hand with `docker` and `docker compose` on a compose host,
made declarable and guarded: `compose restart`, `logs`, `inspect`/`ps`, the wait compose does for
`service_healthy`, `stats --no-stream`, `cp` out of a container (`exec` is in docker_exec.py).

Containers are chosen by compose project and service, or one by name (docker_client.select). A
change names its compose project, which the scope guard admits (`guards.compose_projects.allow`)
and the action checks against the container's own label, so a name can never reach a container
of another project.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any

from . import loglines
from .base import ActionContext, ActionError, Param, Permission
from .docker_client import (
    CONTAINER,
    DISCOVER,
    PROJECT,
    PROJECT_REQUIRED,
    SERVICE,
    DockerAction,
    call,
    engine,
    error_of,
    name_of,
    ready,
    ref,
    select,
    selection_problems,
    state_of,
)
from .docker_env import environment
from .docker_events import crashed, exit_cause, stopped

MAX_CONTAINERS = Param("integer", default=20, minimum=1, description="containers read at most")


class Inspect(DockerAction):
    name = "docker.inspect"
    summary = ("State, health, exit code, OOMKilled, restart count and start time of a service's "
               "containers (docker compose ps -a / docker inspect), and how each exited one "
               "ended, from the Engine's events (`exit_cause`, with `exit_evidence`): `stop` "
               "(docker or compose stop, even one past its timeout that ends at 137; or exit "
               "code 0 or 143), `kill` (docker or compose kill), `crash`, `oom`, or `unknown` (a "
               "137 the Engine no longer has a record of). `crashed` lists what a restart "
               "repairs; `stopped` what is left to whoever may have stopped it (stop, kill, "
               "unknown).")
    params = {"project": PROJECT, "service": SERVICE, "container": CONTAINER,
              "max_containers": MAX_CONTAINERS,
              "environment": Param("boolean", default=False, description="also each container's "
                                   "environment, secrets withheld by name and by look, URL "
                                   "passwords masked")}
    permissions = (*DISCOVER, engine("GET", "/events"))

    def check(self, params: dict[str, Any]) -> list[str]:
        return selection_problems(params)

    def describe(self, params: dict[str, Any]) -> str:
        env = " and environment (secrets withheld)" if params["environment"] else ""
        return (f"inspect the containers of {ref(params)} (state, health, exit code, "
                f"OOMKilled, how an exited one ended{env})")

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        infos, matched = await select(ctx.backends, params, params["max_containers"])
        states = []
        for info in infos:
            state = await judged(ctx.backends, info)
            states.append(state | (environment(info) if params["environment"] else {}))
        return {"containers": states, "count": len(states), "matched": matched,
                "running": sum(s["running"] for s in states),
                "ready": sum(ready(s) for s in states),
                "all_ready": bool(states) and all(ready(s) for s in states),
                "exited": [s["name"] for s in states if s["status"] in ("exited", "dead")],
                "unhealthy": [s["name"] for s in states if s["health"] == "unhealthy"],
                "oom_killed": [s["name"] for s in states if s["oom_killed"]],
                # what a playbook restarts, and what it leaves to whoever stopped it
                "crashed": [s["name"] for s in states if crashed(s)],
                "stopped": [s["name"] for s in states if stopped(s)]}


def _without_events(permissions: tuple[Permission, ...], judging: Any) -> tuple[Permission, ...]:
    """`permissions`, without GET /events unless the step judges how containers ended."""
    events = engine("GET", "/events")
    return permissions if judging not in (False, None) else tuple(p for p in permissions if p != events)


async def judged(backends: Any, info: dict[str, Any]) -> dict[str, Any]:
    """state_of, and for an exited container how it ended (exit_cause, from the Engine's
    events): what `crashed` and `stopped` read."""
    state = state_of(info)
    if state["status"] == "exited":
        state["exit_cause"], state["exit_evidence"] = await exit_cause(backends, info, state)
    return state


class Restart(DockerAction):
    name = "docker.restart"
    summary = ("Restart every container of a compose service (docker compose restart svc); an "
               "exited container is started again. With `crashed_only`, only those "
               "docker.inspect calls `crashed`.")
    mutating = True
    # Not repeatable after a crash: a repeat is a second outage of every container, and the
    # journal cannot tell whether the first restart happened (the same choice as
    # kubernetes.rollout_restart). The engine escalates an interrupted restart instead.
    params = {"project": PROJECT_REQUIRED, "service": SERVICE, "container": CONTAINER,
              "timeout": Param("integer", default=10, minimum=0,
                               description="seconds to stop gracefully before SIGKILL"),
              "max_containers": Param("integer", default=5, minimum=1,
                                      description="refuse (restart none) when more match"),
              # With several containers of a service (compose --scale), one crash must not
              # start a sibling someone stopped (an upgrade of that one) nor interrupt the
              # healthy ones: an SRE restarts the one that died
              "crashed_only": Param("boolean", default=False,
                                    description="restart only the containers that crashed "
                                    "(docker.inspect's `crashed`, judged again now): one stopped "
                                    "or killed on purpose stays stopped, a healthy one runs on")}
    permissions = (*DISCOVER, engine("GET", "/events"), engine("POST", "/containers/{id}/restart"))

    def permissions_for(self, params: dict[str, Any]) -> tuple[Permission, ...]:
        # the Engine's events only to judge what crashed
        return _without_events(self.permissions, params.get("crashed_only"))

    def check(self, params: dict[str, Any]) -> list[str]:
        return selection_problems(params, one=True)

    def describe(self, params: dict[str, Any]) -> str:
        which = ("the crashed containers (not those stopped on purpose nor the healthy)"
                 if params["crashed_only"] else "every container")
        return (f"would restart {which} of {ref(params)} (stop within "
                f"{params['timeout']}s, then start; exited ones are started; refused if more "
                f"than {params['max_containers']} match)")

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        infos, matched = await select(ctx.backends, params)
        if not infos:
            raise ActionError(f"no container of {ref(params)} exists (docker compose up "
                              "creates them): nothing to restart", {"matched": 0}, unapplied=True)
        if matched > params["max_containers"]:
            raise ActionError(f"{matched} containers of {ref(params)}, more than max_containers "
                              f"{params['max_containers']}: restarted none", {"matched": matched},
                              unapplied=True)
        left: list[str] = []
        if params["crashed_only"]:
            states = [await judged(ctx.backends, info) for info in infos]
            left = [s["name"] for s in states if not crashed(s)]
            infos = [info for info, s in zip(infos, states, strict=True) if crashed(s)]
        restarted: list[dict[str, Any]] = []
        for info in infos:
            before = state_of(info)
            try:
                await call(ctx.backends, f"restart container {before['name']}", "restart",
                           info["Id"], timeout=params["timeout"])
            except ActionError as exc:
                if restarted:  # these restarted: a retry would restart them again
                    raise ActionError(f"{exc} (after restarting "
                                      f"{', '.join(r['name'] for r in restarted)})",
                                      {**exc.result, "restarted": restarted}) from None
                raise
            restarted.append({"name": before["name"], "was": before["status"],
                              "exit_code": before["exit_code"]})
        return {"restarted": restarted, "count": len(restarted)} | (
            {"left": left} if params["crashed_only"] else {})


class Logs(DockerAction):
    name = "docker.logs"
    summary = ("Tail the logs (stdout and stderr) of a service's containers, stopped ones "
               "included, optionally keeping lines matching a regex; bounded: the newest are "
               "kept, all are counted.")
    params = {
        "project": PROJECT, "service": SERVICE, "container": CONTAINER,
        "tail": Param("integer", default=100, minimum=1, description="last N lines per container"),
        "since": Param("duration", minimum=1, description="only lines newer than this"),
        "grep": Param("string", regex=True,
                      description="RE2 regex; keep matching lines, e.g. (?i)error"),
        "max_containers": Param("integer", default=5, minimum=1),
        "max_lines": Param("integer", default=200, minimum=1,
                           description="lines kept in total, the newest (all counted as `matched`)"),
        "max_bytes": Param("integer", default=65536, minimum=1,
                           description="bytes kept in total, the newest lines"),
    }
    permissions = (*DISCOVER, engine("GET", "/containers/{id}/logs"))
    MAX_TAIL = 20000  # the Engine has no byte limit: the tail is what bounds a read

    def check(self, params: dict[str, Any]) -> list[str]:
        problems = selection_problems(params) + loglines.grep_problems(params.get("grep"))
        if params["tail"] > self.MAX_TAIL:
            problems.append(f"tail {params['tail']} is above {self.MAX_TAIL} lines")
        return problems

    def describe(self, params: dict[str, Any]) -> str:
        since = f" from the last {params['since']:g}s" if params.get("since") else ""
        grep = f", keeping lines matching {params['grep']}" if params.get("grep") else ""
        return f"read the last {params['tail']} log lines{since} of {ref(params)}{grep}"

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        infos, matched = await select(ctx.backends, params, params["max_containers"])
        options: dict[str, Any] = {"stdout": True, "stderr": True, "tail": params["tail"]}
        if params.get("since"):
            options["since"] = int(time.time() - params["since"])
        texts = []
        for info in infos:
            data = await call(ctx.backends, f"logs of container {name_of(info)}", "logs",
                              info["Id"], **options)
            texts.append((f"[{name_of(info)}]", data.decode("utf-8", "replace")))
        # grep over up to `tail` lines a container, masking (~2 us a byte kept): off the loop
        lines, matched_lines, truncated = await asyncio.to_thread(
            loglines.keep, texts, params.get("grep"), params["max_lines"], params["max_bytes"])
        return {"containers": [name_of(i) for i in infos], "lines": lines,
                "matched": matched_lines, "truncated": truncated or matched > len(infos),
                "states": {name_of(i): (i.get("State") or {}).get("Status") for i in infos}}


class WaitHealthy(DockerAction):
    name = "docker.wait_healthy"
    summary = ("Wait until every container of a service runs and, where it has a healthcheck, "
               "is healthy (compose's service_healthy); fail after the timeout.")
    params = {
        "project": PROJECT, "service": SERVICE, "container": CONTAINER,
        "timeout": Param("duration", default=120.0, minimum=1),
        "interval": Param("duration", default=2.0, minimum=0.1, description="between polls"),
        "ignore_stopped": Param("boolean", default=False,
                                description="not waiting for a container stopped or killed on "
                                "purpose (docker.inspect's `stopped`): a restart with "
                                "crashed_only left it so"),
    }
    permissions = (*DISCOVER, engine("GET", "/events"))

    def permissions_for(self, params: dict[str, Any]) -> tuple[Permission, ...]:
        return _without_events(self.permissions, params.get("ignore_stopped"))

    def check(self, params: dict[str, Any]) -> list[str]:
        return selection_problems(params, one=True)

    def describe(self, params: dict[str, Any]) -> str:
        but = ", but those stopped on purpose," if params["ignore_stopped"] else ""
        return (f"wait up to {params['timeout']:g}s for every container{but} of {ref(params)} "
                "to run and pass its healthcheck")

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        deadline = time.monotonic() + params["timeout"]
        polls, last, states = 0, "no poll yet", []
        while True:
            polls += 1
            try:
                infos, _ = await select(ctx.backends, params)
            except ActionError as exc:
                if not self.is_transient(exc):
                    raise
                last = str(exc)  # a blip while waiting is not the service's failure
            else:
                states = [await judged(ctx.backends, i) if params["ignore_stopped"]
                          else state_of(i) for i in infos]
                if params["ignore_stopped"]:
                    states = [s for s in states if not stopped(s)]
                waiting = [f"{s['name']} {s['status']}"
                           + (f"/{s['health']}" if s["health"] else "")
                           for s in states if not ready(s)]
                if states and not waiting:
                    return {"ready": True, "polls": polls, "containers": states}
                last = ", ".join(waiting) or "no container"
            if time.monotonic() + params["interval"] > deadline:
                raise ActionError(f"{ref(params)} not ready after {params['timeout']:g}s: {last}",
                                  {"ready": False, "polls": polls, "containers": states})
            await ctx.sleep(params["interval"])


class Stats(DockerAction):
    name = "docker.stats"
    summary = "One resource sample of a service's running containers (docker stats --no-stream)."
    params = {"project": PROJECT, "service": SERVICE, "container": CONTAINER,
              "max_containers": MAX_CONTAINERS}
    permissions = (*DISCOVER, engine("GET", "/containers/{id}/stats"))

    def check(self, params: dict[str, Any]) -> list[str]:
        return selection_problems(params)

    def describe(self, params: dict[str, Any]) -> str:
        return f"sample CPU, memory, network and block I/O of {ref(params)} once"

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        infos, _ = await select(ctx.backends, params, params["max_containers"])
        running = [i for i in infos if (i.get("State") or {}).get("Running")]
        samples = await asyncio.gather(*(
            call(ctx.backends, f"stats of container {name_of(i)}", "stats", i["Id"], stream=False)
            for i in running))
        out = [{"name": name_of(i), **_sample(s)} for i, s in zip(running, samples, strict=True)]
        return {"containers": out,
                "not_running": [name_of(i) for i in infos if i not in running]}


def _sample(s: dict[str, Any]) -> dict[str, Any]:
    """The numbers `docker stats` prints, computed as it does."""
    cpu, pre = s.get("cpu_stats") or {}, s.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - \
        (pre.get("cpu_usage") or {}).get("total_usage", 0)
    system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    cpus = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    mem = s.get("memory_stats") or {}
    detail = mem.get("stats") or {}
    # cgroup v2 reports inactive_file, v1 total_inactive_file: the page cache docker subtracts
    cache = detail.get("inactive_file", detail.get("total_inactive_file", 0))
    used = max(mem.get("usage", 0) - cache, 0)
    limit = mem.get("limit") or 0
    nets = (s.get("networks") or {}).values()
    blk = (s.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    return {
        "cpu_percent": round(cpu_delta / system_delta * cpus * 100, 2) if system_delta > 0 else 0.0,
        "memory_bytes": used, "memory_limit_bytes": limit,
        "memory_percent": round(used / limit * 100, 2) if limit else None,
        "net_rx_bytes": sum(n.get("rx_bytes", 0) for n in nets),
        "net_tx_bytes": sum(n.get("tx_bytes", 0) for n in nets),
        "block_read_bytes": sum(b.get("value", 0) for b in blk if b.get("op", "").lower() == "read"),
        "block_write_bytes": sum(b.get("value", 0) for b in blk
                                 if b.get("op", "").lower() == "write"),
        "pids": (s.get("pids_stats") or {}).get("current"),
    }


# --- docker.copy_out -------------------------------------------------------------------------

_FILE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # fullmatch: no trailing newline
_EXECUTION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class CopyOut(DockerAction):
    name = "docker.copy_out"
    summary = ("Copy a path out of a container into the evidence store as the tar archive the "
               "Engine gives (docker cp ctr:path -), with its sha256; the container is only read.")
    # It writes evidence, never the container: it runs even when guards block changes (before
    # anything destructive, which is when it matters), like evidence.bundle. A repeat rewrites
    # the same file.
    idempotent = True
    params = {
        "project": PROJECT, "service": SERVICE, "container": CONTAINER,
        "path": Param("string", required=True, kind="container_path",
                      description="absolute path inside the container"),
        "directory": Param("string", required=True, literal=True,
                           description="evidence directory under guards.evidence.directories "
                           "(the archive goes in <directory>/<execution id>/)"),
        "name": Param("string", description="archive file name without .tar (default: from path)"),
        "max_bytes": Param("integer", default=256 << 20, minimum=1,
                           description="refuse (keep nothing) past this many bytes"),
    }
    permissions = (*DISCOVER, engine("GET", "/containers/{id}/archive"))

    def scope(self, params: dict[str, Any]) -> list[tuple[str, str]]:
        return [("evidence_directory", params.get("directory") or "")]  # written, like a bundle

    def check(self, params: dict[str, Any]) -> list[str]:
        problems = selection_problems(params, one=True)
        directory = params["directory"]
        if not directory or ".." in Path(directory).parts or any(ord(c) < 32 for c in directory):
            problems.append(f"directory {directory!r} must be a plain path without '..' segments")
        if params.get("name") and not _FILE_STEM.fullmatch(params["name"]):
            problems.append(f"name {params['name']!r} must be a plain file name")
        return problems

    def describe(self, params: dict[str, Any]) -> str:
        return (f"copy {params['path']} out of {ref(params)} (read-only) into "
                f"{os.path.join(params['directory'], '<id>')}/{_stem(params)}.tar with its sha256")

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        execution_id = ctx.execution_id or "adhoc"
        if not _EXECUTION_ID.fullmatch(execution_id):
            raise ActionError(f"execution id {execution_id!r} can't name an evidence directory")
        infos, _ = await select(ctx.backends, params, 1)
        if not infos:
            raise ActionError(f"no container of {ref(params)} exists")
        info, path = infos[0], params["path"]
        where = Path(params["directory"]) / execution_id
        target = where / f"{_stem(params)}.tar"
        what = f"copy {path} out of container {name_of(info)}"
        stream, stat = await call(ctx.backends, what, "get_archive", info["Id"], path)
        try:
            digest, size = await asyncio.to_thread(_save, stream, target, params["max_bytes"])
        except ActionError:
            raise
        except OSError as exc:
            raise ActionError(f"{what}: cannot write {target}: {exc}") from exc
        except Exception as exc:  # the Engine's stream broke off mid-way
            raise error_of(what, exc) from exc
        return {"container": name_of(info), "path": path, "file": str(target), "bytes": size,
                "sha256": digest, "stat": stat}


def _stem(params: dict[str, Any]) -> str:
    if params.get("name"):
        return params["name"]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", params["path"].strip("/")) or "root"
    return stem[:100].lstrip("._-") or "root"


def _save(stream: Any, target: Path, max_bytes: int) -> tuple[str, int]:
    """Write the archive whole (temp file + rename) or not at all."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp")
    digest, size = hashlib.sha256(), 0
    try:
        with open(temp, "wb") as out:
            for chunk in stream:
                size += len(chunk)
                if size > max_bytes:
                    raise ActionError(f"archive larger than max_bytes {max_bytes}: kept nothing",
                                      {"max_bytes": max_bytes})
                digest.update(chunk)
                out.write(chunk)
        os.replace(temp, target)
    finally:
        if temp.exists():
            temp.unlink()
        close = getattr(stream, "close", None)
        if callable(close):
            close()
    return digest.hexdigest(), size
