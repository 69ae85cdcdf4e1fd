"""How long `hfremote --help` takes against `hf --help`, both run as new processes in the same run.

    .venv/bin/python benchmarks/cli_help.py --runs 15

Runs the two commands alternately (so load on the machine hits both alike), and reports each one's
median wall time and their ratio. Also `hfremote ps` against `hf jobs ps` on an emulator: the verbs
that talk to the platform load huggingface_hub like `hf` does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import quiet_client_env


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def compare(a: list[str], b: list[str], runs: int, env: dict[str, str]) -> tuple[float, float]:
    times_a, times_b = [], []
    timed(a, env), timed(b, env)  # warm the file cache
    for _ in range(runs):
        times_a.append(timed(a, env))
        times_b.append(timed(b, env))
    return statistics.median(times_a), statistics.median(times_b)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    quiet_client_env()
    env = dict(os.environ)
    bindir = Path(sys.executable).parent
    hfremote = (
        [str(bindir / "hfremote")] if (bindir / "hfremote").exists() else [shutil.which("hfremote") or "hfremote"]
    )
    hf = [str(bindir / "hf")] if (bindir / "hf").exists() else [shutil.which("hf") or "hf"]
    mine, theirs = compare([*hfremote, "--help"], [*hf, "--help"], args.runs, env)
    print(f"hfremote --help  median {mine * 1000:.0f} ms")
    print(f"hf --help        median {theirs * 1000:.0f} ms")
    print(f"ratio hfremote/hf: {mine / theirs:.2f}x")

    from hfremote.emulator import Emulator

    with Emulator() as emu:
        env.update(HF_ENDPOINT=emu.endpoint, HF_TOKEN=emu.token)
        mine, theirs = compare([*hfremote, "ps"], [*hf, "jobs", "ps"], args.runs, env)
    print(f"hfremote ps      median {mine * 1000:.0f} ms")
    print(f"hf jobs ps       median {theirs * 1000:.0f} ms")
    print(f"ratio hfremote ps / hf jobs ps: {mine / theirs:.2f}x")


if __name__ == "__main__":
    main()
