"""What an Executor saves over `submit` of a remote function: N calls of one function, all in flight.

    .venv/bin/python benchmarks/executor_submit.py [--calls 32] [--repeats 3]

In one process with its own Emulator (jobs as host processes), interleaved, `repeats` times each:
- baseline: `[f.submit(x) for x in range(N)]` then every result (each submit is a run of its own: the
  function packed and uploaded with its call, a lease of its own);
- executor: `hfremote.Executor(max_workers=N)`, `[ex.submit(square, x) ...]` then every result (one run:
  the function packed and uploaded once; calls uploaded in batches as the launcher takes them).
Reports the wall time from the first submit to the last result, the time the submits themselves took,
and the requests by kind (emulator's request log), medians over the repeats, and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import count_requests, quiet_client_env  # a sibling module of this script

quiet_client_env()


def square(x: int) -> int:
    return x * x


def one(kind: str, calls: int, emu: Any) -> dict[str, Any]:
    import hfremote

    start = time.time()
    t0 = time.perf_counter()
    if kind == "baseline":
        fn = hfremote.remote(stream_logs=False)(square)
        futures = [fn.submit(x) for x in range(calls)]
        submitted = time.perf_counter() - t0
        assert [f.result(timeout=300) for f in futures] == [x * x for x in range(calls)]
    else:
        with hfremote.Executor(max_workers=calls) as ex:
            futures = [ex.submit(square, x) for x in range(calls)]
            submitted = time.perf_counter() - t0
            assert [f.result(timeout=300) for f in futures] == [x * x for x in range(calls)]
    wall = time.perf_counter() - t0
    requests: Counter[str] = count_requests(emu, start, time.time(), "upload")
    return {"wall": wall, "submit": submitted, "requests": requests}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import hfremote
    from hfremote.emulator import Emulator

    with (
        tempfile.TemporaryDirectory() as tmp,
        Emulator(Path(tmp) / "state", sandbox="off", max_running=args.calls) as emu,
    ):
        hfremote.configure(endpoint=emu.endpoint, token=emu.token)
        one("executor", 2, emu)  # warm-up: whoami, hardware, bucket, connections, uv's cache
        one("baseline", 2, emu)
        results: dict[str, list[dict[str, Any]]] = {"baseline": [], "executor": []}
        for _ in range(args.repeats):
            for kind in results:
                results[kind].append(one(kind, args.calls, emu))
    print(f"{args.calls} calls of one function, all in flight, {args.repeats} repeats (medians)")
    medians = {}
    for kind, runs in results.items():
        wall = statistics.median(r["wall"] for r in runs)
        submit = statistics.median(r["submit"] for r in runs)
        kinds = sorted({k for r in runs for k in r["requests"]})
        counts = {k: statistics.median(r["requests"][k] for r in runs) for k in kinds}
        medians[kind] = (wall, submit, counts)
        shown = ", ".join(f"{k} {v:g}" for k, v in counts.items())
        print(f"  {kind:9} wall {wall:6.2f} s, submits {submit:6.3f} s; requests: {shown}")
    (bw, bs, bc), (ew, es, ec) = medians["baseline"], medians["executor"]
    print(
        f"  executor / baseline: wall {ew / bw:.2f}x, submits {es / bs:.2f}x, "
        f"uploads {ec.get('upload', 0) / max(1, bc.get('upload', 0)):.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
