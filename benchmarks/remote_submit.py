"""What @remote costs over doing the same work by hand with huggingface_hub, and over running it locally.

One Emulator runs in this process; each client runs in a fresh subprocess pointed at it, so the client's CPU
time (its own `time.process_time()`, all its threads, hf_xet's included) is not mixed with the emulator's or
the jobs'. Requests are counted in the emulator's request log between the client's start and end marks.

1. N sequential calls, after one warm-up call each (not counted):
   - hfremote:  `square.submit(x).result()`
   - baseline:  `HfApi.run_uv_job(<local PEP 723 script>, script_args=[x])` + `wait_for_job` + downloading the
                result file the script wrote next to itself (the /data bucket volume run_uv_job mounts)
   Both ship code, run it as a job, and bring a result back; both poll every 50 ms (hfremote's default on
   an emulator; wait_for_job is given the same). Requests the emulator makes to itself while syncing a
   job's volume back are not counted: they are the same on both sides and no client sends them.
2. Wall time of one blocking call `square(1)` (logs streamed, as by default) vs the floor, the same work
   as a PEP 723 script run with `uv run script.py 1` on this machine: medians of R runs after a warm-up.

    .venv/bin/python benchmarks/remote_submit.py [--calls 10] [--repeats 7]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import quiet_client_env  # a sibling module of this script

quiet_client_env()

POLL_SECONDS = 0.05
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
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    script = Path(tempfile.mkdtemp(prefix="hfremote-bench-")) / "square.py"
    script.write_text(SCRIPT)
    bucket = f"{namespace}/jobs-artifacts"

    def one(x: int) -> dict[str, int]:
        job = api.run_uv_job(str(script), script_args=[str(x)], python=PYTHON, namespace=namespace)
        done = api.wait_for_job(job.id, namespace=namespace, poll_interval=POLL_SECONDS)
        assert done.status.stage == "COMPLETED", done.status
        folder = next(v.path for v in job.volumes or [] if v.mount_path == "/data")
        with tempfile.TemporaryDirectory() as tmp:
            dest = Path(tmp) / "result.json"
            api.download_bucket_files(bucket, [(f"{folder}/result.json", dest)], raise_on_missing_files=True)
            return dict(json.loads(dest.read_text()))

    assert one(0) == square(0)  # warm-up
    start, cpu, wall = time.time(), time.process_time(), time.perf_counter()
    for x in range(1, calls + 1):
        assert one(x) == square(x)
    return {"start": start, "end": time.time(), "cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}


# -- the parent ----------------------------------------------------------------------------------------
def run_child(kind: str, emu: Any, calls: int, repeats: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    args = [sys.executable, __file__, "--child", kind, "--endpoint", emu.endpoint, "--token", emu.token]
    args += ["--namespace", emu.user, "--calls", str(calls), "--repeats", str(repeats), "--out", str(out)]
    proc = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"the {kind} client failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return result


def kind_of(method: str, path: str) -> str:
    if path.startswith("/api/jobs/"):
        return "create job" if method == "POST" else "poll"
    if any(part in path for part in ("/reconstructions/", "/fetch/", "/paths-info", "/resolve/", "xet-read-token")):
        return "download result"
    return "upload code"


def count_requests(
    emu: Any, start: float, end: float, sync_windows: list[tuple[float, float]]
) -> collections.Counter[str]:
    def own_sync(t: float, path: str) -> bool:
        return path.startswith("/cas/") and any(a <= t <= b for a, b in sync_windows)

    return collections.Counter(
        kind_of(method, path) for t, method, path, _ in emu.requests() if start <= t <= end and not own_sync(t, path)
    )


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
        # Note when the emulator syncs a job's bucket volume back through its own Xet routes.
        windows: list[tuple[float, float]] = []
        lock = threading.Lock()
        publish = emu.ctx.runtime._publish

        def timed_publish(*a: Any) -> None:
            t = time.time()
            try:
                publish(*a)
            finally:
                with lock:
                    windows.append((t, time.time()))

        emu.ctx.runtime._publish = timed_publish
        remote = run_child("hfremote", emu, args.calls, args.repeats)
        baseline = run_child("baseline", emu, args.calls, args.repeats)
        with lock:
            sync = list(windows)
        remote_kinds = count_requests(emu, remote["start"], remote["end"], sync)
        baseline_kinds = count_requests(emu, baseline["start"], baseline["end"], sync)
    floor = floor_latency(args.repeats)

    n = args.calls
    rows = [
        ("HTTP requests per call", remote_kinds.total() / n, baseline_kinds.total() / n, "{:.1f}"),
        *(
            (f"&nbsp;&nbsp;{kind}", remote_kinds[kind] / n, baseline_kinds[kind] / n, "{:.1f}")
            for kind in ("upload code", "create job", "poll", "download result")
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
