"""What a log tail costs on the emulator against reading the whole log (a failed input's report asks a tail).

Starts an Emulator, runs one job, grows its log to SIZE MB, then times `fetch_job_logs(tail=20)` against
reading the whole log and keeping its last 20 lines (the baseline, measured in the same run).

    .venv/bin/python benchmarks/log_tail.py [--mb 50] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from _common import quiet_client_env  # a sibling module of this script

quiet_client_env()

from huggingface_hub import HfApi  # noqa: E402

from hfremote.emulator import Emulator  # noqa: E402


def timed(fn: object, repeats: int) -> tuple[float, list[str]]:
    times, out = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with Emulator(Path(tempfile.mkdtemp()) / "state", token="hf_bench_token") as emu:
        api = HfApi(endpoint=emu.endpoint, token=emu.token)
        job = api.run_job(image="python:3.12", command=["python", "-c", "print('done')"])
        while api.inspect_job(job_id=job.id).status.stage != "COMPLETED":
            time.sleep(0.05)
        line = json.dumps({"data": "x" * 1000, "timestamp": "2026-01-01T00:00:00.000Z"}) + "\n"
        with (emu.state_dir / "logs" / f"{job.id}.jsonl").open("a") as f:
            f.write(line * (args.mb * (1 << 20) // len(line)))
        tail_s, tail = timed(lambda: list(api.fetch_job_logs(job_id=job.id, tail=20)), args.repeats)
        whole_s, whole = timed(lambda: list(api.fetch_job_logs(job_id=job.id))[-20:], args.repeats)
        assert tail == whole
        print(
            f"{args.mb} MB log: tail=20 {tail_s * 1000:.0f} ms, whole log {whole_s * 1000:.0f} ms "
            f"(median of {args.repeats}); the tail is {whole_s / tail_s:.0f}x faster"
        )


if __name__ == "__main__":
    main()
