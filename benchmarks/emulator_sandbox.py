"""What the job sandbox costs, and whether a job's cost stays flat as a run grows.

1. A trivial job (`python -c pass`) on two emulators in this process, one sandboxed, one running jobs as
   host processes, runs interleaved: time from the `run_job` request to COMPLETED seen by `inspect_job`
   polled every 10 ms. Ratio of the medians (goal: sandboxed <= 1.2x).
2. A map of N inputs with chunksize=1 (one job per input) on one sandboxed emulator: the time the first
   N/8 results took against the time the last N/8 took (goal: <= 1.3x). A job that copied or scanned
   every file of its run would make the last slice much slower than the first.
3. The same growth test at the API level, with the volumes the engine gives each job of a map: the run's
   shared folder read-only at /data and the job's own chunk folder read-write at /data/chunk (two bucket
   volumes with `path` sub-folders), N jobs created at once: each job's running time (mounting, the
   script, syncing back), first N/8 jobs against the last N/8.

    .venv/bin/python benchmarks/emulator_sandbox.py [--runs 20] [--inputs 2000] [--jobs 2000] [--max-running 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from _common import quiet_client_env  # a sibling module of this script

quiet_client_env()

from huggingface_hub import HfApi  # noqa: E402

import hfremote  # noqa: E402
from hfremote import remote  # noqa: E402
from hfremote.emulator import Emulator  # noqa: E402

POLL_SECONDS = 0.010


def one_job(api: HfApi, ns: str) -> float:
    start = time.perf_counter()
    job = api.run_job(image="python:3.12", command=["python", "-c", "pass"], namespace=ns)
    while (stage := api.inspect_job(job_id=job.id, namespace=ns).status.stage) not in ("COMPLETED", "ERROR"):
        time.sleep(POLL_SECONDS)
    if stage != "COMPLETED":
        raise SystemExit(f"job {job.id} ended {stage}")
    return time.perf_counter() - start


def trivial_jobs(runs: int) -> None:
    with Emulator(sandbox="on") as boxed, Emulator(sandbox="off") as host:
        apis = {"sandboxed": (HfApi(endpoint=boxed.endpoint, token=boxed.token), boxed.user)}
        apis["host process"] = (HfApi(endpoint=host.endpoint, token=host.token), host.user)
        times: dict[str, list[float]] = {name: [] for name in apis}
        for api, ns in apis.values():
            one_job(api, ns)  # warm-up
        for _ in range(runs):
            for name, (api, ns) in apis.items():  # interleaved: the machine's load hits both alike
                times[name].append(one_job(api, ns))
    base = statistics.median(times["host process"])
    print(f"**1. trivial job (`python -c pass`), {runs} runs each, interleaved**")
    print()
    print("| | median ms | min/max ms | / host process |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        med = statistics.median(values)
        spread = f"{min(values) * 1000:.0f}/{max(values) * 1000:.0f}"
        print(f"| {name} | {med * 1000:.0f} | {spread} | {med / base:.2f} |")


def _mean(values: list[float]) -> float:
    return sum(values) / max(1, len(values))


def square(x: int) -> int:
    return x * x


def growing_map(inputs: int, max_running: int) -> None:
    with Emulator(sandbox="on", max_running=max_running) as emu:
        hfremote.configure(endpoint=emu.endpoint, token=emu.token)
        fn = remote(timeout=300)(square)
        list(fn.map(range(4), chunksize=1, logs="none"))  # warm-up: uv's environment, the bucket
        start = time.perf_counter()
        arrivals, loads = [], []
        for i, value in enumerate(fn.map(range(inputs), chunksize=1, logs="none")):
            assert value == i * i
            arrivals.append(time.perf_counter() - start)
            loads.append(os.getloadavg()[0])  # the machine is shared: say how busy it was meanwhile
        hfremote.configure()
    slice_ = max(1, inputs // 8)
    first = arrivals[slice_ - 1]
    last = arrivals[-1] - arrivals[-slice_ - 1]
    print()
    print(f"**2. map of {inputs} inputs, chunksize=1, max_running={max_running}, sandboxed**")
    print()
    print("| | s | ms per input | load average (1 min) |")
    print("|---|---:|---:|---:|")
    print(f"| first {slice_} results | {first:.1f} | {first / slice_ * 1000:.0f} | {_mean(loads[:slice_]):.1f} |")
    print(f"| last {slice_} results | {last:.1f} | {last / slice_ * 1000:.0f} | {_mean(loads[-slice_:]):.1f} |")
    print(f"| whole map | {arrivals[-1]:.1f} | {arrivals[-1] / inputs * 1000:.0f} | {_mean(loads):.1f} |")
    print()
    print(f"last / first: {last / first:.2f}x")


JOB_SCRIPT = b"""
from pathlib import Path
x = int(Path("/data/chunk/input.txt").read_text())
Path("/data/chunk/result.txt").write_text(str(x * x))
"""


def engine_layout(jobs: int, max_running: int) -> None:
    from datetime import datetime

    with Emulator(sandbox="on", max_running=max_running) as emu:
        api, ns = HfApi(endpoint=emu.endpoint, token=emu.token), emu.user
        bucket = f"{ns}/bench"
        api.create_bucket(bucket)
        files = [
            (JOB_SCRIPT, "run/shared/job.py"),
            *((str(i).encode(), f"run/chunks/{i}/input.txt") for i in range(jobs)),
        ]
        api.batch_bucket_files(bucket, add=files)
        from huggingface_hub import Volume

        ids = [
            api.run_job(
                image="python:3.12",
                command=["python", "/data/job.py"],
                volumes=[
                    Volume(type="bucket", source=bucket, path="run/shared", mount_path="/data", read_only=True),
                    Volume(type="bucket", source=bucket, path=f"run/chunks/{i}", mount_path="/data/chunk"),
                ],
                namespace=ns,
            ).id
            for i in range(jobs)
        ]
        deadline = time.monotonic() + 3600
        loads: dict[str, float] = {}  # job id -> load average when it was seen running
        while time.monotonic() < deadline:
            running = emu.jobs(stages=["RUNNING"])
            for job in running:
                loads.setdefault(job["id"], os.getloadavg()[0])
            if not running and not emu.jobs(stages=["SCHEDULING"], limit=1):
                break
            time.sleep(0.2)
        records = [emu.ctx.store.job(job_id) for job_id in ids]
        results = len(emu.ctx.store.files(bucket, "run/chunks/")) - jobs

    def at(text: str) -> float:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    if any(r is None or r["status"]["stage"] != "COMPLETED" for r in records):
        raise SystemExit("a job did not complete")
    running = [at(r["finishedAt"]) - at(r["startedAt"]) for r in records if r is not None]
    slice_ = max(1, jobs // 8)
    first, last = statistics.median(running[:slice_]), statistics.median(running[-slice_:])
    print()
    print(f"**3. {jobs} jobs, shared folder read-only + own chunk read-write, max_running={max_running}**")
    print(f"({results} results stored)")
    print()
    load_first = _mean([loads[i] for i in ids[:slice_] if i in loads])
    load_last = _mean([loads[i] for i in ids[-slice_:] if i in loads])
    print("| | median running ms per job | load average (1 min) |")
    print("|---|---:|---:|")
    print(f"| first {slice_} jobs | {first * 1000:.0f} | {load_first:.1f} |")
    print(f"| last {slice_} jobs | {last * 1000:.0f} | {load_last:.1f} |")
    print()
    print(f"last / first: {last / first:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--inputs", type=int, default=2000, help="inputs of the map (0: skip it)")
    parser.add_argument("--jobs", type=int, default=2000, help="jobs of the API-level growth test (0: skip it)")
    parser.add_argument("--max-running", type=int, default=2)
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print()
    trivial_jobs(args.runs)
    if args.inputs:
        growing_map(args.inputs, args.max_running)
    if args.jobs:
        engine_layout(args.jobs, args.max_running)


if __name__ == "__main__":
    main()
