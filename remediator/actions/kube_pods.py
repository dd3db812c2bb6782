"""Pod actions: `kubernetes.delete_pods` and `kubernetes.logs` (kubectl delete / logs | grep).

Both act on a set of pods chosen by a label selector, so both are bounded: a delete refuses
outright when more pods match than the playbook allows (never a silent subset), and a log read
takes a bounded number of pods, lines and bytes, so evidence stays readable and the audit
store small.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from . import loglines
from .base import ActionContext, ActionError, Param, rbac
from .kube_client import NAMESPACE, KubeAction, call, status_of

DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"
READ_BYTES = 4 << 20  # a pod's log read at most (the tail's lines are the usual bound)
SELECTOR = Param("string", kind="label_selector", description="pods matching this selector")


def _one_of(params: dict[str, Any], *names: str) -> list[str]:
    given = [n for n in names if params.get(n)]
    return [] if len(given) == 1 else [f"give exactly one of {' or '.join(names)}"]


class DeletePods(KubeAction):
    name = "kubernetes.delete_pods"
    summary = "Delete pods by name or selector; refuse when more match than `max`."
    mutating = True  # not idempotent: a repeat by selector would delete the replacements
    params = {
        "namespace": NAMESPACE,
        "names": Param("list", kind="k8s_name", description="pod names"),
        "selector": SELECTOR,
        "max": Param("integer", required=True, minimum=1,
                     description="refuse (delete nothing) when more pods than this match"),
        "grace_period": Param("integer", minimum=0, description="seconds; default the pod's"),
    }
    permissions = rbac("", "pods", "list", "delete")

    def check(self, params: dict[str, Any]) -> list[str]:
        problems = _one_of(params, "names", "selector")
        if len(params.get("names") or []) > params["max"]:
            problems.append(f"{len(params['names'])} names given, more than max {params['max']}")
        return problems

    def describe(self, params: dict[str, Any]) -> str:
        ns = params["namespace"]
        if params.get("names"):
            return "would delete pods " + ", ".join(f"{ns}/{n}" for n in params["names"])
        return (f"would delete the pods in {ns} matching {params['selector']} "
                f"(refused if more than {params['max']} match)")

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        ns = params["namespace"]
        if params.get("names"):
            targets: list[tuple[str, str | None]] = [(n, None) for n in params["names"]]
        else:
            selector = params["selector"]
            listed = await call(ctx.backends, f"list pods in {ns} matching {selector}", "core",
                                "list_namespaced_pod", ns, label_selector=selector)
            targets = [(p["metadata"]["name"], p["metadata"]["uid"]) for p in listed["items"]]
            if len(targets) > params["max"]:
                raise ActionError(
                    f"{len(targets)} pods in {ns} match {selector!r}, more than max "
                    f"{params['max']}: deleted none", {"matched": len(targets), "max": params["max"]},
                    unapplied=True)
        deleted: list[str] = []
        gone: list[str] = []
        for name, uid in targets:
            body: dict[str, Any] = {"propagationPolicy": "Background"}  # as kubectl sends
            if uid:  # the pod we counted, not a same-named replacement (StatefulSets)
                body["preconditions"] = {"uid": uid}
            if params.get("grace_period") is not None:
                body["gracePeriodSeconds"] = params["grace_period"]
            try:
                await call(ctx.backends, f"delete pod {ns}/{name}", "core",
                           "delete_namespaced_pod", name, ns, body=body)
            except ActionError as exc:
                if status_of(exc) in (404, 409):  # already gone, or already replaced
                    gone.append(name)
                    continue
                if deleted:  # these are gone: a retry would list their replacements too
                    raise ActionError(f"{exc} (after deleting {', '.join(deleted)})",
                                      {**exc.result, "deleted": deleted}) from None
                raise
            deleted.append(name)
        return {"matched": len(targets), "deleted": deleted, "gone": gone}


class Logs(KubeAction):
    name = "kubernetes.logs"
    summary = ("Tail pod logs across a selector (bounded), optionally keeping lines matching a "
               "regex; the newest are kept, all are counted.")
    params = {
        "namespace": NAMESPACE,
        "selector": SELECTOR,
        "pod": Param("string", kind="k8s_name", description="one pod (or use selector)"),
        "container": Param("string", kind="container",
                           description="default: the pod's default container, else its first"),
        "tail": Param("integer", default=100, minimum=1, description="last N lines per pod"),
        "since": Param("duration", minimum=1, description="only lines newer than this"),
        "previous": Param("boolean", default=False, description="the last terminated container"),
        "grep": Param("string", regex=True,
                      description="RE2 regex; keep matching lines, e.g. (?i)s3|upload|error"),
        "extract": Param("string", regex=True,
                         description="RE2 regex with one group: its distinct values in the kept "
                                     "lines, as `extracted` (e.g. keys)"),
        "max_pods": Param("integer", default=5, minimum=1),
        "max_lines": Param("integer", default=200, minimum=1,
                           description="lines kept in total, the newest (all counted as `matched`)"),
        "max_bytes": Param("integer", default=65536, minimum=1,
                           description="bytes kept in total, the newest lines"),
    }
    permissions = (*rbac("", "pods", "get", "list"), *rbac("", "pods/log", "get"))

    def check(self, params: dict[str, Any]) -> list[str]:
        return (_one_of(params, "selector", "pod") + loglines.grep_problems(params.get("grep"))
                + loglines.extract_problems(params.get("extract")))

    def describe(self, params: dict[str, Any]) -> str:
        ns = params["namespace"]
        where = f"pod {ns}/{params['pod']}" if params.get("pod") else \
            f"up to {params['max_pods']} pods in {ns} matching {params['selector']}"
        since = f" from the last {params['since']:g}s" if params.get("since") else ""
        grep = f", keeping lines matching {params['grep']}" if params.get("grep") else ""
        # `previous`: the container that ended before this one (a crash's last words), which
        # a plan must tell apart from the running one's lines
        which = " of the previous (terminated) container" if params.get("previous") else ""
        return f"read the last {params['tail']} log lines{since}{which} of {where}{grep}"

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        ns = params["namespace"]
        if params.get("pod"):
            pods = [await call(ctx.backends, f"get pod {ns}/{params['pod']}", "core",
                               "read_namespaced_pod", params["pod"], ns)]
        else:
            listed = await call(ctx.backends, f"list pods in {ns} matching {params['selector']}",
                                "core", "list_namespaced_pod", ns,
                                label_selector=params["selector"])
            # the unready pods first: they are usually the evidence
            pods = sorted(listed["items"], key=lambda p: (pod_ready(p), p["metadata"]["name"]))
        chosen = pods[: params["max_pods"]]
        texts = await asyncio.gather(*(self._read(ctx, p, params) for p in chosen))
        errors, read = {}, []
        truncated = len(pods) > len(chosen)
        for (prefix, text, error), pod in zip(texts, chosen, strict=True):
            if error:
                errors[pod["metadata"]["name"]] = error
                continue
            truncated |= len(text.encode()) >= READ_BYTES  # the server cut it
            read.append((prefix, text))
        # grep, masking (~2 us a byte kept) and extract: off the loop
        lines, matched, cut, extracted = await asyncio.to_thread(
            _kept, read, params.get("grep"), params["max_lines"], params["max_bytes"],
            params.get("extract"))
        truncated |= cut
        result = {"pods": len(chosen), "pods_matched": len(pods), "lines": lines,
                  "matched": matched, "truncated": truncated}
        if params.get("extract"):
            result["extracted"] = extracted
        if errors:
            result["errors"] = errors
        return result

    async def _read(self, ctx: ActionContext, pod: dict[str, Any],
                    params: dict[str, Any]) -> tuple[str, str, str]:
        """(kubectl --prefix label, text, error): a pod whose container has not started
        (400) is noted, not fatal; denial or a missing pod still fails the step."""
        meta, ns = pod["metadata"], params["namespace"]
        container = params.get("container") or default_container(pod)
        # limitBytes cuts the END of the tail (the server reads from its start): the newest
        # lines, the evidence. `tail` bounds the read; READ_BYTES only bounds a tail of huge
        # lines. max_bytes bounds what is kept, from the newest (loglines.keep).
        options: dict[str, Any] = {"container": container, "tail_lines": params["tail"],
                                   "limit_bytes": READ_BYTES}
        if params.get("since"):
            options["since_seconds"] = math.ceil(params["since"])
        if params["previous"]:
            options["previous"] = True
        prefix = f"[pod/{meta['name']}/{container}]"
        try:
            text = await call(ctx.backends, f"logs of pod {ns}/{meta['name']}", "core",
                              "read_namespaced_pod_log", meta["name"], ns, text=True, **options)
        except ActionError as exc:
            if status_of(exc) != 400:
                raise
            return prefix, "", str(exc)
        return prefix, text, ""


def _kept(read: list[tuple[str, str]], grep: str | None, max_lines: int, max_bytes: int,
          extract: str | None) -> tuple[list[str], int, bool, list[str]]:
    """loglines.keep, then `extract` over the kept lines: masked, so no secret is a value."""
    lines, matched, truncated = loglines.keep(read, grep, max_lines, max_bytes)
    return lines, matched, truncated, loglines.extract(lines, extract) if extract else []


def default_container(pod: dict[str, Any]) -> str:
    """kubectl's choice: the default-container annotation, else the first container."""
    annotations = pod["metadata"].get("annotations") or {}
    return annotations.get(DEFAULT_CONTAINER) or pod["spec"]["containers"][0]["name"]


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])
