"""Does a map's cost per input stay flat as the map grows? And what does a run's lease cost?

1. A large and a small map of a trivial function, `chunksize=1, max_parallel=32`, each in a fresh client
   process pointed at one emulator: HTTP requests per input and client CPU ms per input, as a ratio
   large / small (goal: 1.0 within 10%). The engine's requests per tick grow with the unfinished jobs
   only, so nothing should grow with the inputs already done.
2. The lease: a run whose one job sleeps, with `lease_seconds=L`; the requests the client sends while
   nothing but the lease changes, per renewal, then per run-hour at the default lease (120 s, renewed
   every 30 s). A job reads its lease from its mounted folder: no request per job.

    .venv/bin/python benchmarks/map_scale.py [--large 10000] [--small 1000] [--lease-window 12]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from _common import quiet_client_env, run_child  # a sibling module of this script

quiet_client_env()

POLL_SECONDS = 0.05
LEASE_SECONDS = 2.0
DEFAULT_LEASE = 120.0


def square(x: int) -> int:
    return x * x


def sleeper(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def child_map(endpoint: str, token: str, args: argparse.Namespace) -> dict[str, Any]:
    import hfremote

    hfremote.configure(endpoint=endpoint, token=token, poll_interval=POLL_SECONDS)
    fn = hfremote.remote(stream_logs=False)(square)
    assert list(fn.map(range(4), progress=False, logs="none")) == [0, 1, 4, 9]  # warm-up
    n = args.inputs
    start, cpu, wall = time.time(), time.process_time(), time.perf_counter()
    results = list(fn.map(range(n), chunksize=1, max_parallel=32, progress=False, logs="none"))
    out = {"start": start, "end": time.time(), "cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}
    assert results == [square(x) for x in range(n)]
    return out


def child_lease(endpoint: str, token: str, args: argparse.Namespace) -> dict[str, Any]:
    import hfremote

    hfremote.configure(endpoint=endpoint, token=token, lease_seconds=LEASE_SECONDS, poll_interval=5.0)
    fn = hfremote.remote(stream_logs=False)(sleeper)
    future = fn.submit(args.lease_window + 6)
    while future.stage != "RUNNING":
        time.sleep(0.05)
    time.sleep(3)  # past the first looks and the log stream's start
    start = time.time()
    time.sleep(args.lease_window)
    end = time.time()
    future.cancel()
    return {"start": start, "end": end}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=10000)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--lease-window", type=float, default=12.0, help="seconds of lease renewals counted")
    parser.add_argument("--inputs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=["map", "lease"], help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child = child_map if args.child == "map" else child_lease
        Path(args.out).write_text(json.dumps(child(args.endpoint, args.token, args)))
        return

    from hfremote.emulator import Emulator

    def requests(emu: Emulator, run: dict[str, Any]) -> list[tuple[str, str]]:
        return [(m, p) for t, m, p, _ in emu.requests() if run["start"] <= t <= run["end"]]

    rows = {}
    with Emulator(max_running=32) as emu:
        for label, n in (("small", args.small), ("large", args.large)):
            run = run_child(__file__, "map", emu, [f"--inputs={n}"])
            rows[label] = (n, len(requests(emu, run)) / n, run["cpu"] / n * 1000, run["wall"] / n * 1000)
        lease = run_child(__file__, "lease", emu, [f"--lease-window={args.lease_window}"])
        during = [p for m, p in requests(emu, lease) if not p.startswith("/api/jobs/")]
    renewals = args.lease_window / (LEASE_SECONDS / 4)
    per_renewal = len(during) / renewals
    per_hour = per_renewal * 3600 / (DEFAULT_LEASE / 4)

    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print()
    print(
        "| map of `x * x`, chunksize=1, max_parallel=32 | inputs | requests / input | client CPU ms / input |", end=""
    )
    print(" wall ms / input |")
    print("|---|---:|---:|---:|---:|")
    for label, (n, req, cpu, wall) in rows.items():
        print(f"| {label} | {n} | {req:.2f} | {cpu:.2f} | {wall:.1f} |")
    (_, req_s, cpu_s, _), (_, req_l, cpu_l, _) = rows["small"], rows["large"]
    print(f"| large / small | | {req_l / req_s:.2f} | {cpu_l / cpu_s:.2f} | |")
    print()
    print(
        f"lease: {len(during)} requests in {args.lease_window:g} s of renewals every {LEASE_SECONDS / 4:g} s "
        f"= {per_renewal:.1f} per renewal; at the default lease ({DEFAULT_LEASE:g} s, renewed every "
        f"{DEFAULT_LEASE / 4:g} s): {per_hour:.0f} requests per run-hour, 0 per job-hour"
    )
    kinds: dict[str, int] = {}
    for path in during:
        kind = "/".join(path.split("/")[:3]) if path.startswith("/cas/") else path.rsplit("/", 1)[-1]
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"  by route: {dict(sorted(kinds.items()))}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
