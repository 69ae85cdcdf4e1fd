"""Client peak memory of a call with a large argument, and of a map of large lazily made inputs.

    uv run --with numpy python benchmarks/client_memory.py [--sizes-mb 200 1024] [--map-inputs 48 --map-mb 16]

One emulator runs in this process; each client runs in a new process pointed at it, so the emulator's
memory (it receives the upload) is not counted. Each scenario runs twice, in fresh processes: once as a
baseline that makes the same data and does a small warm-up call but does not send the data, then for
real. The extra peak is the difference of the two processes' peak resident memory (ru_maxrss); the
ratio is that extra divided by the data's size. Goal: <= 1.5x.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from _common import quiet_client_env, run_child

MB = 1 << 20


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def child(args: argparse.Namespace) -> None:
    import numpy as np

    import hfremote
    from hfremote import remote

    hfremote.configure(endpoint=args.endpoint, token=args.token)

    @remote(stream_logs=False, timeout=600)
    def nbytes(a: np.ndarray) -> int:  # type: ignore[type-arg]
        return int(a.nbytes)

    nbytes(np.zeros(10, dtype=np.uint8))  # warm-up: every import, thread and connection in both processes
    rng = np.random.default_rng(0)
    kind, size = args.child.split(":")
    size_bytes = int(size)
    result: dict[str, object] = {}
    start = time.perf_counter()
    if kind in ("call", "call-baseline"):
        data = rng.integers(0, 255, size_bytes, dtype=np.uint8)
        if kind == "call":
            try:
                result["value"] = nbytes(data)
            except hfremote.OptionsError as e:  # over the size limit: how much was used to find out
                result["refused"] = str(e).split(";")[0]
        del data
    else:  # a map of lazily made inputs, each `size_bytes` large
        count = args.map_inputs

        def inputs():  # type: ignore[no-untyped-def]
            for _ in range(count):
                yield rng.integers(0, 255, size_bytes, dtype=np.uint8)

        if kind == "map":
            result["value"] = sum(nbytes.map(inputs(), max_parallel=8, progress=False))
        else:
            result["value"] = sum(int(a.nbytes) for a in inputs())  # the same data made, not sent
    result["seconds"] = time.perf_counter() - start
    result["peak"] = peak_bytes()
    Path(args.out).write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes-mb", type=int, nargs="*", default=[200, 1024])
    parser.add_argument("--map-inputs", type=int, default=48)
    parser.add_argument("--map-mb", type=int, default=16)
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
    with Emulator(Path(__import__("tempfile").mkdtemp(prefix="hfremote-bench-mem-"))) as emu:
        scenarios = [("call", mb * MB, mb * MB) for mb in args.sizes_mb]
        scenarios.append(("map", args.map_mb * MB, args.map_mb * MB))
        for kind, size, data in scenarios:
            base = run_child(__file__, f"{kind}-baseline:{size}", emu, extra)
            real = run_child(__file__, f"{kind}:{size}", emu, extra)
            extra_peak = real["peak"] - base["peak"]
            label = f"{kind} {size // MB} MB" if kind == "call" else f"map {args.map_inputs} x {size // MB} MB"
            note = real.get("refused") or f"{real['seconds']:.1f} s"
            rows.append((label, base["peak"] / MB, real["peak"] / MB, extra_peak / MB, extra_peak / data, note))
    print("| scenario | baseline peak MB | peak MB | extra MB | extra / one input | |")
    print("|---|---:|---:|---:|---:|---|")
    for label, base_mb, real_mb, extra_mb, ratio, note in rows:
        print(f"| {label} | {base_mb:.0f} | {real_mb:.0f} | {extra_mb:.0f} | {ratio:.2f}x | {note} |")


if __name__ == "__main__":
    sys.exit(main())
