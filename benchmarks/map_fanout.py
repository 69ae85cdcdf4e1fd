"""What `map` costs for a fan-out of many small inputs: requests and client CPU, and wall time.

One Emulator runs in this process; each client runs in a fresh subprocess pointed at it, so the client's CPU
time (its own `time.process_time()`, all its threads, hf_xet's included) is not mixed with the emulator's or
the jobs'. Requests are counted in the emulator's request log between the client's start and end marks.

1. Requests and client CPU per input for N inputs of a trivial function (`x * x`), after a warm-up map:
   - hfremote:  `list(square.map(range(N), chunksize=C))`
   - baseline:  a loop of `HfApi.run_uv_job(<local PEP 723 script>, script_args=[x])` + `wait_for_job` +
                downloading the result file, one input after the other (B inputs; per-input numbers)
   Both poll every 50 ms (hfremote is configured so; wait_for_job is given the same).
2. Wall time of a 200-input map of the same function, for several chunksizes (median of R runs after a
   warm-up, hfremote polling as it does by default on an emulator), against the local floor:
   `concurrent.futures.ProcessPoolExecutor(2).map` over the same inputs, pool start-up included; then the
   same for a function busy `--busy-ms` per input (0: skip it).

    .venv/bin/python benchmarks/map_fanout.py [--inputs 1000] [--chunksize 50] [--baseline-inputs 1000]
        [--wall-inputs 200] [--chunksizes 10,50,100,200] [--repeats 9] [--busy-ms 10]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from _common import count_requests, quiet_client_env, run_baseline, run_child  # a sibling module of this script

quiet_client_env()

POLL_SECONDS = 0.05
UPLOAD = "upload code and inputs"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
SCRIPT = f'''# /// script
# requires-python = "=={PYTHON}.*"
# dependencies = []
# ///
"""x * x, written as JSON next to this script (in the job: the /data bucket volume)."""
import json
import sys
from pathlib import Path

x = int(sys.argv[1])
(Path(__file__).resolve().parent / "result.json").write_text(json.dumps(x * x))
'''


def square(x: int) -> int:
    return x * x


def busy_square(x: int, ms: float) -> int:
    """x * x after `ms` milliseconds of busy work (0: the same trivial function)."""
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        pass
    return x * x


# -- the clients (run in child processes) ------------------------------------------------------------
def child_map(endpoint: str, token: str, args: argparse.Namespace) -> dict[str, Any]:
    import hfremote

    hfremote.configure(endpoint=endpoint, token=token, poll_interval=POLL_SECONDS)
    fn = hfremote.remote(stream_logs=False)(square)
    # warm-up: whoami, hardware, bucket, connections, uv's cached environment for the entry script
    assert list(fn.map(range(4), chunksize=2, progress=False)) == [square(x) for x in range(4)]
    n = args.inputs
    start, cpu, wall = time.time(), time.process_time(), time.perf_counter()
    results = list(fn.map(range(n), chunksize=args.chunksize, progress=False))
    out: dict[str, Any] = {
        "start": start,
        "end": time.time(),
        "cpu": time.process_time() - cpu,
        "wall": time.perf_counter() - wall,
    }
    assert results == [square(x) for x in range(n)]
    # Wall times are hfremote's own: its default polling for this endpoint, not the 50 ms of the comparison.
    hfremote.configure(endpoint=endpoint, token=token)
    busy = hfremote.remote(stream_logs=False)(busy_square)
    walls: dict[str, dict[str, list[float]]] = {}
    expected = [square(x) for x in range(args.wall_inputs)]
    assert list(busy.map(range(4), itertools.repeat(0.0), chunksize=2, progress=False)) == expected[:4]
    for ms in (0.0, args.busy_ms) if args.busy_ms else (0.0,):
        walls[str(ms)] = {}
        for size in args.chunksizes:
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                values = busy.map(range(args.wall_inputs), itertools.repeat(ms), chunksize=size, progress=False)
                assert list(values) == expected
                times.append(time.perf_counter() - t)
            walls[str(ms)][str(size)] = times
    out["walls"] = walls
    return out


def child_baseline(endpoint: str, token: str, args: argparse.Namespace) -> dict[str, Any]:
    return run_baseline(endpoint, token, args.namespace, SCRIPT, PYTHON, args.baseline_inputs, POLL_SECONDS, square)


# -- the parent ----------------------------------------------------------------------------------------
def floor_walls(inputs: int, ms: float, repeats: int) -> list[float]:
    expected = [square(x) for x in range(inputs)]
    times = []
    for _ in range(repeats + 1):  # the first run warms the imports the workers need
        t = time.perf_counter()
        with ProcessPoolExecutor(2) as pool:
            assert list(pool.map(busy_square, range(inputs), itertools.repeat(ms))) == expected
        times.append(time.perf_counter() - t)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1000, help="inputs of the map whose requests are counted")
    parser.add_argument("--chunksize", type=int, default=50, help="chunksize of that map")
    parser.add_argument("--baseline-inputs", type=int, default=1000, help="inputs run one by one by hand")
    parser.add_argument("--wall-inputs", type=int, default=200)
    parser.add_argument(
        "--chunksizes", type=lambda s: [int(v) for v in s.split(",")], default=[10, 50, 100, 200], help="e.g. 10,50"
    )
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--busy-ms", type=float, default=10.0, help="also time a function this busy per input")
    parser.add_argument("--child", choices=["map", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        child = child_map if args.child == "map" else child_baseline
        Path(args.out).write_text(json.dumps(child(args.endpoint, args.token, args)))
        return

    from hfremote.emulator import Emulator

    argv = [
        f"--inputs={args.inputs}",
        f"--chunksize={args.chunksize}",
        f"--baseline-inputs={args.baseline_inputs}",
        f"--wall-inputs={args.wall_inputs}",
        f"--chunksizes={','.join(map(str, args.chunksizes))}",
        f"--repeats={args.repeats}",
        f"--busy-ms={args.busy_ms}",
    ]
    with Emulator() as emu:
        ours = run_child(__file__, "map", emu, argv)
        theirs = run_child(__file__, "baseline", emu, argv)
        our_kinds = count_requests(emu, ours["start"], ours["end"], UPLOAD)
        their_kinds = count_requests(emu, theirs["start"], theirs["end"], UPLOAD)
    floors = {ms: floor_walls(args.wall_inputs, float(ms), args.repeats) for ms in ours["walls"]}

    n, b = args.inputs, args.baseline_inputs
    rows = [
        ("HTTP requests per input", our_kinds.total() / n, their_kinds.total() / b, "{:.2f}"),
        *(
            (f"&nbsp;&nbsp;{kind}", our_kinds[kind] / n, their_kinds[kind] / b, "{:.2f}")
            for kind in (UPLOAD, "create job", "poll", "download result")
        ),
        ("client CPU ms per input", ours["cpu"] / n * 1000, theirs["cpu"] / b * 1000, "{:.2f}"),
        ("wall ms per input", ours["wall"] / n * 1000, theirs["wall"] / b * 1000, "{:.1f}"),
    ]
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print()
    print(
        f"**1. {n} inputs, `map(chunksize={args.chunksize})`** vs {b} inputs run one by one by hand "
        "(`run_uv_job` + `wait_for_job` + download)"
    )
    print()
    print("| per input | hfremote map | huggingface_hub by hand | by hand / map |")
    print("|---|---:|---:|---:|")
    for label, mine, hand, fmt in rows:
        ratio = f"{hand / mine:.1f}x" if mine else "-"
        print(f"| {label} | {fmt.format(mine)} | {fmt.format(hand)} | {ratio} |")
    for work, by_size in ours["walls"].items():
        floor = floors[work]
        floor_ms = statistics.median(floor) * 1000
        what = "trivial function (`x * x`)" if float(work) == 0 else f"function busy {float(work):g} ms per input"
        print()
        print(f"**2. wall time of a {args.wall_inputs}-input map, {what}, median of {args.repeats}** (after a warm-up)")
        print()
        print("| | jobs | ms | min/max ms | / floor |")
        print("|---|---:|---:|---:|---:|")
        for size, times in by_size.items():
            ms = statistics.median(times) * 1000
            jobs = -(-args.wall_inputs // int(size))
            spread = f"{min(times) * 1000:.0f}/{max(times) * 1000:.0f}"
            print(f"| `map(chunksize={size})` on the emulator | {jobs} | {ms:.0f} | {spread} | {ms / floor_ms:.1f} |")
        spread = f"{min(floor) * 1000:.0f}/{max(floor) * 1000:.0f}"
        print(f"| `ProcessPoolExecutor(2).map` (floor) | - | {floor_ms:.0f} | {spread} | 1.0 |")


if __name__ == "__main__":
    main()
