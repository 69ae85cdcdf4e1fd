"""What the asyncio faces cost: `asyncio.gather` of `f.aio(x)` against the same calls from threads, and how
late the event loop runs while they do.

One Emulator (jobs as host processes, as many at once as there are cores) and the client in this process.

1. N calls three ways, R rounds interleaved, medians: one after the other (`f(x)`), from N threads
   (`f(x)` each, the way to run calls at once without asyncio), and `asyncio.gather(*(f.aio(x) ...))`.
   Goal: gather / threads <= 1.1 (the async face adds nothing to the calls themselves).
2. The loop's lateness: a ticker task asks to wake every 5 ms and records how late it wakes: on an idle
   loop, during the gather of `f.aio(x)` (logs streamed, as by default), and, for contrast, during a
   gather of `await f.submit(x)`, whose submits run on the loop's thread. Goal: `f.aio` is as late as
   the idle loop; the contrast shows what a blocking request on the loop's thread costs.

    .venv/bin/python benchmarks/async_calls.py [--calls 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import quiet_client_env  # a sibling module of this script

quiet_client_env()

TICK = 0.005


def square(x: int) -> int:
    return x * x


async def _ticker(stop: asyncio.Event, lateness: list[float]) -> None:
    while not stop.is_set():
        asked = time.perf_counter()
        await asyncio.sleep(TICK)
        lateness.append(time.perf_counter() - asked - TICK)


async def _on_loop(fn: Any, x: int) -> Any:
    return await fn.submit(x)  # `await f.submit(x)`: the submit's requests on the loop's thread


async def _gather_with_ticker(fn: Any, calls: int, blocking: bool = False) -> tuple[float, list[float]]:
    stop, lateness = asyncio.Event(), []
    ticker = asyncio.create_task(_ticker(stop, lateness))
    start = time.perf_counter()
    values = await asyncio.gather(*((_on_loop(fn, x) if blocking else fn.aio(x)) for x in range(calls)))
    wall = time.perf_counter() - start
    stop.set()
    await ticker
    assert values == [square(x) for x in range(calls)]
    return wall, lateness


async def _idle(seconds: float) -> list[float]:
    stop, lateness = asyncio.Event(), []
    ticker = asyncio.create_task(_ticker(stop, lateness))
    await asyncio.sleep(seconds)
    stop.set()
    await ticker
    return lateness


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import hfremote
    from hfremote.emulator import Emulator

    with tempfile.TemporaryDirectory() as state, Emulator(Path(state), sandbox="off") as emu:
        hfremote.configure(endpoint=emu.endpoint, token=emu.token, poll_interval=0.05)
        quiet = hfremote.remote(stream_logs=False)(square)
        shown = hfremote.remote(square)  # the default: each call's logs followed and printed
        assert quiet(0) == 0  # warm-up: whoami, hardware, bucket, connections
        times: dict[str, list[float]] = {"sequential": [], "threads": [], "gather": []}
        for _ in range(args.rounds):
            start = time.perf_counter()
            assert [quiet(x) for x in range(args.calls)] == [square(x) for x in range(args.calls)]
            times["sequential"].append(time.perf_counter() - start)
            start = time.perf_counter()
            with ThreadPoolExecutor(args.calls) as pool:
                assert list(pool.map(quiet, range(args.calls))) == [square(x) for x in range(args.calls)]
            times["threads"].append(time.perf_counter() - start)
            start = time.perf_counter()
            asyncio.run(_gather(quiet, args.calls))
            times["gather"].append(time.perf_counter() - start)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            wall, busy = asyncio.run(_gather_with_ticker(shown, args.calls))
        idle = asyncio.run(_idle(wall))
        _, on_loop = asyncio.run(_gather_with_ticker(quiet, args.calls, blocking=True))

    median = {kind: statistics.median(values) for kind, values in times.items()}
    print(f"{args.calls} calls, {args.rounds} rounds (median wall time)")
    for kind, value in median.items():
        print(f"  {kind:<10} {value:6.2f} s")
    print(f"  gather / threads    = {median['gather'] / median['threads']:.2f}  (goal <= 1.1)")
    print(f"  gather / sequential = {median['gather'] / median['sequential']:.2f}")
    print(f"loop lateness over {wall:.1f} s ({len(busy)} ticks busy, {len(idle)} idle), in ms:")
    for name, values in (("idle", idle), ("f.aio(x)", busy), ("await f.submit(x)", on_loop)):
        ordered = sorted(values)
        p99, worst = ordered[int(0.99 * (len(ordered) - 1))] * 1e3, max(values) * 1e3
        print(f"  {name:<18} median {statistics.median(values) * 1e3:6.2f}  p99 {p99:7.2f}  max {worst:7.2f}")
    sys.stdout.flush()


async def _gather(fn: Any, calls: int) -> None:
    values = await asyncio.gather(*(fn.aio(x) for x in range(calls)))
    assert values == [square(x) for x in range(calls)]


if __name__ == "__main__":
    main()
