"""Client peak memory of a call with a large argument, and of a map of large lazily made inputs.

    uv run --with numpy python benchmarks/client_memory.py [--sizes-mb 200 1024] [--map-inputs 48 --map-mb 16]

One emulator runs in this process; each client runs in a new process pointed at it, so the emulator's
memory (it receives the upload) is not counted. In each client, after a warm-up call and once the data
exists, a thread samples the resident memory every 5 ms while the call (or the map) runs: the extra peak
is the highest sample minus the memory just before (the baseline, measured in the same process). For the
map, the baseline is the memory before the first input is made. The ratio divides the extra peak by one
argument's size (goal: <= 1.5x). Each scenario runs `--repeats` times; the median is shown.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import quiet_client_env, run_child

MB = 1 << 20


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


class Sampler:
    """The highest resident memory seen while the block runs, sampled every 5 ms."""

    def __enter__(self) -> Sampler:
        self.before = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def child(args: argparse.Namespace) -> None:
    import numpy as np

    import hfremote
    from hfremote import remote

    hfremote.configure(endpoint=args.endpoint, token=args.token)

    @remote(stream_logs=False, timeout=600, dependencies=[f"numpy=={np.__version__}"])  # (hfremote 0.1 needs it)
    def nbytes(a: np.ndarray) -> int:  # type: ignore[type-arg]
        return int(a.nbytes)

    nbytes(np.zeros(10, dtype=np.uint8))  # warm-up: every import, thread and connection in both processes
    rng = np.random.default_rng(0)
    kind, size = args.child.split(":")
    size_bytes = int(size)
    result: dict[str, object] = {}
    start = time.perf_counter()
    if kind == "call":
        data = rng.integers(0, 255, size_bytes, dtype=np.uint8)
        with Sampler() as sampler:
            try:
                result["value"] = nbytes(data)
            except hfremote.OptionsError as e:  # over the size limit: how much was used to find out
                result["refused"] = str(e).split(";")[0]
    else:  # a map of lazily made inputs, each `size_bytes` large: only one exists at a time here

        def inputs():  # type: ignore[no-untyped-def]
            for _ in range(args.map_inputs):
                yield rng.integers(0, 255, size_bytes, dtype=np.uint8)

        with Sampler() as sampler:
            result["value"] = sum(nbytes.map(inputs(), max_parallel=8, progress=False))
    result["seconds"] = time.perf_counter() - start
    result["before"], result["peak"] = sampler.before, sampler.peak
    Path(args.out).write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes-mb", type=int, nargs="*", default=[200, 1024])
    parser.add_argument("--map-inputs", type=int, default=48)
    parser.add_argument("--map-mb", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child")
    parser.add_argument("--endpoint")
    parser.add_argument("--token")
    parser.add_argument("--namespace")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    quiet_client_env()
    from hfremote.emulator import Emulator

    extra = ["--map-inputs", str(args.map_inputs)]
    rows = []
    with Emulator(Path(tempfile.mkdtemp(prefix="hfremote-bench-mem-"))) as emu:
        scenarios = [("call", mb * MB) for mb in args.sizes_mb] + [("map", args.map_mb * MB)]
        for kind, size in scenarios:
            runs = [run_child(__file__, f"{kind}:{size}", emu, extra) for _ in range(args.repeats)]
            extras = sorted(r["peak"] - r["before"] for r in runs)
            mid = runs[[r["peak"] - r["before"] for r in runs].index(extras[len(extras) // 2])]
            label = f"call, {size // MB} MB argument" if kind == "call" else f"map, {args.map_inputs} x {size // MB} MB"
            note = mid.get("refused") or f"{statistics.median(r['seconds'] for r in runs):.1f} s"
            rows.append((label, mid["before"] / MB, extras[len(extras) // 2] / MB, extras[-1] / MB, size, note))
    print(f"| scenario | memory before, MB | extra peak, MB (median of {args.repeats}) | max | median / one input | |")
    print("|---|---:|---:|---:|---:|---|")
    for label, before, median, worst, size, note in rows:
        print(f"| {label} | {before:.0f} | {median:.0f} | {worst:.0f} | {median * MB / size:.2f}x | {note} |")


if __name__ == "__main__":
    sys.exit(main())
