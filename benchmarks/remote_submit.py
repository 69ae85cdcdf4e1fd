"""What @remote costs over doing the same work by hand with huggingface_hub, and over running it locally.

One Emulator runs in this process; each client runs in a fresh subprocess pointed at it, so the client's CPU
time (its own `time.process_time()`, all its threads, hf_xet's included) is not mixed with the emulator's or
the jobs'. Requests are counted in the emulator's request log between the client's start and end marks.

1. N sequential calls, after one warm-up call each (not counted):
   - hfremote:  `square.submit(x).result()`
   - baseline:  `HfApi.run_uv_job(<local PEP 723 script>, script_args=[x])` + `wait_for_job` + downloading the
                result file the script wrote next to itself (the /data bucket volume run_uv_job mounts)
   Both ship code, run it as a job, and bring a result back; both poll every 50 ms (hfremote is configured
   so; wait_for_job is given the same).
2. Wall time of one blocking call `square(1)` (logs streamed, as by default) vs the floor, the same work
   as a PEP 723 script run with `uv run script.py 1` on this machine: medians of R runs after a warm-up.

    .venv/bin/python benchmarks/remote_submit.py [--calls 10] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import count_requests, quiet_client_env, run_baseline, run_child  # a sibling module of this script

quiet_client_env()

POLL_SECONDS = 0.05
UPLOAD = "upload code"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
SCRIPT = f'''# /// script
# requires-python = "=={PYTHON}.*"
# dependencies = []
# ///
"""square(x), written as JSON next to this script (in the job: the /data bucket volume)."""
import json
import sys
from pathlib import Path

x = int(sys.argv[1])
result = {{"x": x, "square": x * x}}
(Path(__file__).resolve().parent / "result.json").write_text(json.dumps(result))
'''


def square(x: int) -> dict[str, int]:
    return {"x": x, "square": x * x}


# -- the clients (run in child processes) ------------------------------------------------------------
def child_hfremote(endpoint: str, token: str, calls: int, repeats: int) -> dict[str, Any]:
    import hfremote

    hfremote.configure(endpoint=endpoint, token=token, poll_interval=POLL_SECONDS)
    fn = hfremote.remote(stream_logs=False)(square)
    assert fn.submit(0).result() == square(0)  # warm-up: whoami, hardware, bucket, connections
    start, cpu, wall = time.time(), time.process_time(), time.perf_counter()
    for x in range(1, calls + 1):
        assert fn.submit(x).result() == square(x)
    out: dict[str, Any] = {
        "start": start,
        "end": time.time(),
        "cpu": time.process_time() - cpu,
        "wall": time.perf_counter() - wall,
    }
    blocking = hfremote.remote(square)  # the default: logs streamed to stderr
    assert blocking(1) == square(1)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        assert blocking(1) == square(1)
        times.append(time.perf_counter() - t)
    out["latency"] = times
    return out


def child_baseline(endpoint: str, token: str, calls: int, namespace: str) -> dict[str, Any]:
    return run_baseline(endpoint, token, namespace, SCRIPT, PYTHON, calls, POLL_SECONDS, square)


# -- the parent ----------------------------------------------------------------------------------------
def floor_latency(repeats: int) -> list[float]:
    script = Path(tempfile.mkdtemp(prefix="hfremote-bench-floor-")) / "square.py"
    script.write_text(SCRIPT)
    uv = [sys.executable, "-m", "uv", "run", "--quiet", str(script), "1"]
    subprocess.run(uv, check=True)  # warm-up: uv resolves and caches the script's environment
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(uv, check=True)
        times.append(time.perf_counter() - t)
    assert json.loads((script.parent / "result.json").read_text()) == square(1)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--child", choices=["hfremote", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        if args.child == "hfremote":
            result = child_hfremote(args.endpoint, args.token, args.calls, args.repeats)
        else:
            result = child_baseline(args.endpoint, args.token, args.calls, args.namespace)
        Path(args.out).write_text(json.dumps(result))
        return

    from hfremote.emulator import Emulator

    with Emulator() as emu:
        remote = run_child(__file__, "hfremote", emu, ["--calls", str(args.calls), "--repeats", str(args.repeats)])
        baseline = run_child(__file__, "baseline", emu, ["--calls", str(args.calls), "--repeats", str(args.repeats)])
        remote_kinds = count_requests(emu, remote["start"], remote["end"], UPLOAD)
        baseline_kinds = count_requests(emu, baseline["start"], baseline["end"], UPLOAD)
    floor = floor_latency(args.repeats)

    n = args.calls
    rows = [
        ("HTTP requests per call", remote_kinds.total() / n, baseline_kinds.total() / n, "{:.1f}"),
        *(
            (f"&nbsp;&nbsp;{kind}", remote_kinds[kind] / n, baseline_kinds[kind] / n, "{:.1f}")
            for kind in (UPLOAD, "create job", "poll", "download result")
        ),
        ("client CPU ms per call", remote["cpu"] / n * 1000, baseline["cpu"] / n * 1000, "{:.1f}"),
        ("wall ms per call", remote["wall"] / n * 1000, baseline["wall"] / n * 1000, "{:.0f}"),
    ]
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print()
    print(f"**1. {n} sequential calls** (`submit(x).result()` vs `run_uv_job` + `wait_for_job` + download)")
    print()
    print("| per call | hfremote | huggingface_hub by hand | hfremote / by hand |")
    print("|---|---:|---:|---:|")
    for label, ours, theirs, fmt in rows:
        print(f"| {label} | {fmt.format(ours)} | {fmt.format(theirs)} | {ours / theirs:.2f} |")
    ours_ms = statistics.median(remote["latency"]) * 1000
    floor_ms = statistics.median(floor) * 1000
    print()
    print(f"**2. one blocking call, median of {args.repeats}** (after a warm-up)")
    print()
    print("| | ms | ratio |")
    print("|---|---:|---:|")
    print(f"| `square(1)` on the emulator | {ours_ms:.0f} | {ours_ms / floor_ms:.2f} |")
    print(f"| `uv run square.py 1` (floor) | {floor_ms:.0f} | 1.00 |")
    print()
    print(
        "min/max ms: "
        f"square(1) {min(remote['latency']) * 1000:.0f}/{max(remote['latency']) * 1000:.0f}, "
        f"uv run {min(floor) * 1000:.0f}/{max(floor) * 1000:.0f}"
    )


if __name__ == "__main__":
    main()
