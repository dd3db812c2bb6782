"""`evidence.bundle`: keep what the earlier steps saw before anything destructive runs.

The Libervia runbook's rule — collect evidence before any destructive action — as a step: the
outcomes, results and log lines of earlier steps become one file each, plus `manifest.json`
with the sha256 and size of every file, in a local directory or an S3 prefix.

It declares itself non-mutating on purpose: it only writes new evidence, never the system being
remediated, so it still runs when guards block mutations (that is when evidence matters most)
and needs no rate limit or approval. It still writes, so it is scoped like any write: the
bucket must be in `guards.buckets.allow`, the directory under one of
`guards.evidence.directories`, and both are written literally in the playbook (no label picks
where evidence goes). An S3 upload declares `s3:PutObject`. The bundle lives under
`<location>/<execution id>/<step>/`, so a re-run (a retry, a resume after a crash) rewrites the
same bundle instead of scattering copies, and two bundles of one execution never overwrite
each other; the manifest, written last, is the authority on what the bundle holds.

Its files hold what the steps recorded, no more: their results as journaled (redacted), and
log lines as the `logs` actions kept them (the newest), secrets masked (loglines.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from .base import Action, ActionContext, ActionError, Param, Permission, iam
from .s3 import call, client, is_transient, url

# Step names as the playbook schema allows them; they become file names, so nothing else.
_STEP_NAME = re.compile(r"[a-z_][a-z0-9_]*")  # fullmatch: `$` accepts a trailing newline
_EXECUTION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
MANIFEST = "manifest.json"


class EvidenceBundle(Action):
    name = "evidence.bundle"
    summary = ("Write the results (and log lines) of earlier steps, with a sha256 manifest, to a "
               "directory or an S3 prefix, under the execution's id.")
    mutating = False
    idempotent = True
    params = {
        "include": Param("list", description="earlier step names; default all earlier steps"),
        "directory": Param("string", literal=True,
                           description="local directory under guards.evidence.directories (the "
                           "bundle goes in <directory>/<execution id>/<step>/)"),
        "bucket": Param("string", kind="s3_bucket", literal=True,
                        description="upload to this bucket (in guards.buckets.allow) instead"),
        "prefix": Param("string", default="evidence/", kind="s3_prefix", literal=True,
                        description="key prefix in `bucket`"),
    }
    permissions = iam("s3:PutObject")

    def permissions_for(self, params: dict[str, Any]) -> tuple[Permission, ...]:
        return self.permissions if params.get("bucket") else ()  # a directory needs no IAM

    def scope(self, params: dict[str, Any]) -> list[tuple[str, str]]:
        if params.get("bucket"):
            return [("bucket", params["bucket"])]
        return [("evidence_directory", params.get("directory") or "")]

    def check(self, params: dict[str, Any]) -> list[str]:
        problems = []
        if ("directory" in params) == ("bucket" in params):
            problems.append("give exactly one of directory, bucket")
        directory = params.get("directory")
        if directory is not None and (not directory or ".." in Path(directory).parts
                                      or any(ord(c) < 32 for c in directory)):
            problems.append(f"directory {directory!r} must be a plain path without '..' segments")
        bad = [n for n in params.get("include") or [] if not isinstance(n, str)
               or not _STEP_NAME.fullmatch(n)]
        if bad:
            problems.append(f"include must list step names, got {bad}")
        return problems

    def describe(self, params: dict[str, Any]) -> str:
        steps = ", ".join(params["include"]) if params.get("include") else "all earlier steps"
        where = _location(params, "<id>", "<step>")
        return f"bundle the results of {steps} with a sha256 manifest into {where}"

    def is_transient(self, exc: BaseException) -> bool:
        return is_transient(exc)

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        execution_id = ctx.execution_id or "adhoc"
        if not _EXECUTION_ID.fullmatch(execution_id):
            raise ActionError(f"execution id {execution_id!r} can't name a bundle directory")
        wanted = params.get("include") or [n for n in ctx.results if _STEP_NAME.fullmatch(n)]
        present = [n for n in wanted if n in ctx.results]
        missing = [n for n in wanted if n not in ctx.results]
        if missing:
            ctx.log.warning("evidence.bundle: no earlier step named %s", ", ".join(missing))
        files: dict[str, bytes] = {}
        for step in present:
            files.update(_step_files(step, ctx.results[step]))
        manifest = _json({
            "execution_id": execution_id, "fingerprint": ctx.fingerprint,
            "steps": present, "missing": missing,
            "files": [{"name": n, "sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)}
                      for n, d in files.items()],
        })
        files[MANIFEST] = manifest  # last: once it exists, every file it lists is complete
        step = ctx.step or "evidence"
        if not _STEP_NAME.fullmatch(step):
            raise ActionError(f"step name {step!r} can't name a bundle directory")
        location = _location(params, execution_id, step)
        if params.get("bucket"):
            await _upload(ctx, params["bucket"], location, files)
        else:
            try:
                await asyncio.to_thread(_write, Path(location), files)
            except OSError as exc:
                raise ActionError(f"cannot write evidence to {location}: {exc}") from exc
        return {"location": location, "files": len(files) - 1, "steps": present, "missing": missing,
                "manifest_sha256": hashlib.sha256(manifest).hexdigest()}


def _location(params: dict[str, Any], execution_id: str, step: str) -> str:
    if params.get("bucket"):
        prefix = params.get("prefix") or ""
        prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        return url(params["bucket"], f"{prefix}{execution_id}/{step}/")
    return os.path.join(params.get("directory") or ".", execution_id, step)


def _step_files(step: str, view: Any) -> dict[str, bytes]:
    """`<step>.json` (outcome, detail, result) and, for a result with log lines, `<step>.log`."""
    view = view if isinstance(view, dict) else {"result": view}
    result = view.get("result")
    out: dict[str, bytes] = {}
    if isinstance(result, dict) and isinstance(result.get("lines"), list):
        lines = result["lines"]
        out[f"{step}.log"] = "".join(f"{line}\n" for line in lines).encode()
        result = {**result, "lines": f"{len(lines)} lines, in {step}.log"}
    out[f"{step}.json"] = _json({"step": step, "outcome": view.get("outcome"),
                                 "detail": view.get("detail", ""), "result": result})
    return out


def _json(data: Any) -> bytes:
    """Stable bytes: the same results give the same file and the same manifest hash."""
    return (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode()


def _write(directory: Path, files: dict[str, bytes]) -> None:
    """Each file written whole (temp file + rename): a crash never leaves half a file."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        temp = directory / f".{name}.tmp"
        temp.write_bytes(data)
        os.replace(temp, directory / name)


async def _upload(ctx: ActionContext, bucket: str, location: str, files: dict[str, bytes]) -> None:
    s3, base = await client(ctx.backends), location.removeprefix(f"s3://{bucket}/")
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        # The checksum metadata lets s3.verify_checksum check the evidence itself later.
        await call(f"PutObject {location}{name}", s3.put_object, Bucket=bucket, Key=base + name,
                   Body=data, Metadata={"checksum": digest},
                   ContentType="text/plain" if name.endswith(".log") else "application/json")
