"""How long a trivial job takes on the emulator, seen from the real client.

Starts an Emulator, runs `python -c pass` N times (one after the other) and measures, for each run, the time
from sending the run_job request to observing COMPLETED through inspect_job polled every 10 ms.

    .venv/bin/python benchmarks/emulator_run_job.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from _common import quiet_client_env  # a sibling module of this script

quiet_client_env()

from huggingface_hub import HfApi  # noqa: E402

from hfremote.emulator import Emulator  # noqa: E402

POLL_SECONDS = 0.010
TERMINAL = ("COMPLETED", "ERROR", "CANCELED")


def one_run(api: HfApi, ns: str) -> tuple[float, float, int]:
    """(seconds from request to COMPLETED, seconds for the run_job request alone, inspect polls)."""
    start = time.perf_counter()
    job = api.run_job(image="python:3.12", command=["python", "-c", "pass"], namespace=ns)
    created = time.perf_counter()
    polls = 0
    while True:
        polls += 1
        stage = api.inspect_job(job_id=job.id, namespace=ns).status.stage
        if stage in TERMINAL:
            break
        time.sleep(POLL_SECONDS)
    done = time.perf_counter()
    if stage != "COMPLETED":
        raise SystemExit(f"job {job.id} ended {stage}")
    return done - start, created - start, polls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    with Emulator() as emu:
        api = HfApi(endpoint=emu.endpoint, token=emu.token)
        one_run(api, emu.user)  # warm-up: first connection, uv cache lookup, imports
        results = [one_run(api, emu.user) for _ in range(args.runs)]

    print(f"run_job('python -c pass') -> COMPLETED, {args.runs} runs, inspect polled every 10 ms")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print()
    print(f"{'run':>4}  {'total ms':>9}  {'run_job ms':>10}  {'polls':>5}")
    for i, (total, request, polls) in enumerate(results, 1):
        print(f"{i:>4}  {total * 1000:>9.1f}  {request * 1000:>10.1f}  {polls:>5}")
    totals = [r[0] * 1000 for r in results]
    requests = [r[1] * 1000 for r in results]
    print()
    print(f"{'':>4}  {'total ms':>9}  {'run_job ms':>10}")
    print(f"{'min':>4}  {min(totals):>9.1f}  {min(requests):>10.1f}")
    print(f"{'med':>4}  {statistics.median(totals):>9.1f}  {statistics.median(requests):>10.1f}")
    print(f"{'max':>4}  {max(totals):>9.1f}  {max(requests):>10.1f}")


if __name__ == "__main__":
    main()
