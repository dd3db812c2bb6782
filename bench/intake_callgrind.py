"""Instructions per webhook, counted by callgrind (not timed: a shared VM's noise does not
reach them): the bare handler and `serve` with intake alone (bench/intake_server.py), each
under `valgrind --tool=callgrind`, warmed up, its counters zeroed, then bench/storm.lua's
webhooks from wrk in two runs of N1 and N2 (each dumped): two figures that agree say start-up
and idle work are out of them. Needs valgrind (Debian's package).

    python bench/intake_callgrind.py [--requests 500 1500] [--only intake] [--out DIR]
    callgrind_annotate --inclusive=yes DIR/intake/cg.PID.2   # by function, C level

Python's own functions are not named there (3.11 has no perf trampoline): the C functions
under them are (zlib, SQLite, orjson, llhttp, uvloop), and the rest is the interpreter.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from live_peers import production_config  # noqa: E402
from storm_bench import alert_label_sets, lua_script, run_wrk, start_wait  # noqa: E402

from tests.support.worker import TOKEN, free_port  # noqa: E402


def count(kind: str, out: Path, script: Path, requests: list[int]) -> list[float]:
    """Instructions per webhook of each run of `requests` webhooks."""
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "REMEDIATOR_WEBHOOK_TOKEN": TOKEN, "REMEDIATOR_LOG_LEVEL": "info",
           "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0"}
    if kind == "bare":
        cmd = [str(ROOT / "bench" / "bare_server.py"), str(port)]
    else:
        url = "http://127.0.0.1:9"  # dry-run: no peer is called
        config = production_config(out / "config.yaml", url, url, out / "escalations")
        env["INTAKE_ONLY"] = "1"
        cmd = [str(ROOT / "bench" / "intake_server.py"), "serve", "--listen",
               f"127.0.0.1:{port}", "--store", f"sqlite:///{out}/{time.time_ns()}.db",
               "--rules", str(ROOT / "rules"), "--config", str(config)]
    with (out / "server.log").open("ab") as log:
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p",
                                 sys.executable, *cmd], env=env, stdout=log, stderr=log)
    try:
        start_wait(port, proc, timeout=600)
        run_wrk(script, port, 300, f"w{time.time_ns()}")  # imports, references, caches
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for n in requests:
            run_wrk(script, port, n, f"m{time.time_ns()}")
            subprocess.run(["callgrind_control", "-d", f"n{n}", str(proc.pid)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        proc.terminate()
        proc.wait(120)
    figures = []
    for i, n in enumerate(requests, 1):
        dump = out / f"cg.{proc.pid}.{i}"
        summary = next(line for line in dump.read_text().splitlines()
                       if line.startswith("summary:"))
        figures.append(int(summary.split()[1]) / n)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, nargs=2, default=[500, 1500])
    parser.add_argument("--only", choices=("bare", "intake"))
    parser.add_argument("--out", type=Path, help="where the callgrind files go (kept)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="remediator-callgrind-"))
    script = out / "storm.lua"
    out.mkdir(parents=True, exist_ok=True)
    script.write_text(lua_script(alert_label_sets()))
    for kind in (args.only,) if args.only else ("bare", "intake"):
        figures = count(kind, out / kind, script, args.requests)
        print(f"{kind:8}" + "  ".join(f"{n} webhooks: {f / 1000:.1f} k instructions each"
                                      for n, f in zip(args.requests, figures, strict=True)),
              flush=True)
    print(f"callgrind files in {out}")


if __name__ == "__main__":
    main()
