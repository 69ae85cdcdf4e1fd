"""asyncio on the emulator: `await f.aio(x)`, `await f.submit.aio(x)`, awaitable futures and `asyncio.gather`,
`async for r in f.map.aio(xs)`, `async def` functions run on an event loop in the job, and cancellation.

No sleeps in the tests: they poll with deadlines, and a job that must run until the test says so waits for a
marker file the test creates (sandbox off) or is cancelled. That the event loop is never blocked is shown by
the loop doing the releasing itself while hfremote waits.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from helpers import Lines, MyError, poll, start_script
from huggingface_hub import HfApi

import hfremote
from hfremote import RemoteFuture, remote
from hfremote.emulator import Emulator

RESULT_TIMEOUT = 120  # a deadline, not a timed assertion


# -- shipped to the jobs by value ----------------------------------------------------------------------
@remote(timeout=120)
async def square(x: int) -> int:
    await asyncio.sleep(0)  # a real await: it needs a running loop
    print(f"MARKER-square-{x}", flush=True)
    return x * x


@remote(timeout=120)
def add(a: int, b: int) -> int:
    return a + b


@remote(timeout=120)
async def fail_over_one(n: int) -> int:
    await asyncio.sleep(0)
    if n > 1:
        raise MyError(f"n={n} is too big", code=n)  # ASYNC-RAISE-LINE
    return n


@remote(timeout=120)
async def wait_for_file(path: str) -> str:
    print("MARKER-waiting", flush=True)
    while not os.path.exists(path):
        await asyncio.sleep(0.02)
    return "released"


@remote(timeout=120)
async def nap(x: int) -> int:
    print(f"MARKER-napping-{x}", flush=True)
    await asyncio.sleep(110)  # until cancelled
    return x


_LOOPS: list[asyncio.AbstractEventLoop] = []


@remote(timeout=120)
async def on_one_loop(x: int) -> bool:
    """Whether every input this job ran so far ran on one loop, still open."""
    _LOOPS.append(asyncio.get_running_loop())
    return len({id(loop) for loop in _LOOPS}) == 1 and not any(loop.is_closed() for loop in _LOOPS)


@remote(timeout=120)
async def nested(x: int) -> list[int]:
    """Remote functions called in a job are plain calls there, with every face of the client."""
    values = [await square.aio(x), square(x), add(x, 1), await add.aio(x, 2)]  # a sync call from a coroutine too
    values.append(await square.submit(x))  # awaitable, as a RemoteFuture is
    values.append((await square.submit.aio(x)).result())
    values += [r async for r in square.map.aio([1, 2])]
    values += [r async for r in add.starmap.aio([(1, 1)])]
    return values


class Scaler:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    @remote(timeout=120)
    async def scale(self, x: int) -> int:
        await asyncio.sleep(0)
        return self.factor * x


def sync_calls_async(x: int) -> int:
    return square(x) + 1  # a sync function calling an async remote one in the job: its value


# -- helpers -------------------------------------------------------------------------------------------
async def until(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """`poll` for coroutines: the loop keeps running between looks."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def stages(emulator: Emulator) -> dict[str, str]:
    return {job["id"]: job["status"]["stage"] for job in emulator.jobs()}


def running(emulator: Emulator, count: int) -> Callable[[], list[str]]:
    """A check for `until`: the ids of the jobs, once there are `count` of them and one runs (the emulator
    runs as many at once as there are cores; the others wait in SCHEDULING)."""

    def check() -> list[str]:
        now = stages(emulator)
        return list(now) if len(now) >= count and "RUNNING" in now.values() else []

    return check


def all_in(emulator: Emulator, ids: list[str], stage: str) -> bool:
    now = stages(emulator)
    return all(now.get(i) == stage for i in ids)


# -- async def functions -------------------------------------------------------------------------------
def test_an_async_function_runs_on_an_event_loop_in_the_job(remote_emulator: Emulator) -> None:
    assert square(3) == 9  # a plain (blocking) call gives the coroutine's value
    assert square.submit(4).result(timeout=RESULT_TIMEOUT) == 16
    assert list(square.map([1, 2, 3], chunksize=2)) == [1, 4, 9]
    coroutine = square.local(5)  # a plain local call: its coroutine, as calling the function gives
    assert inspect.iscoroutine(coroutine)
    assert asyncio.run(coroutine) == 25
    # The inputs of one job share its loop (what they keep, a client session say, stays usable).
    assert list(on_one_loop.map(range(4), chunksize=4)) == [True] * 4
    # An async method binds as a plain one does.
    scaler = Scaler(3)
    assert scaler.scale(2) == 6
    assert asyncio.run(scaler.scale.aio(4)) == 12


def test_an_async_functions_exception_comes_back_as_itself(remote_emulator: Emulator) -> None:
    with pytest.raises(MyError) as caught:
        fail_over_one(3)
    assert caught.value.code == 3
    remote_traceback = str(caught.value.__cause__)
    assert "ASYNC-RAISE-LINE" in remote_traceback  # pointed back at this file, with its source line
    # From the user's coroutine on: neither the entry script nor asyncio's machinery
    assert "asyncio" not in remote_traceback and "entry.py" not in remote_traceback, remote_traceback


def test_remote_functions_called_inside_an_async_job(remote_emulator: Emulator) -> None:
    assert nested(3) == [9, 9, 4, 5, 9, 9, 1, 4, 2]
    assert remote(sync_calls_async)(4) == 17


def test_a_scheduled_function_must_be_plain() -> None:
    with pytest.raises(hfremote.OptionsError, match=r"is async: a scheduled function must be a plain"):
        remote.schedule("@daily")(square.function)


# -- the faces -----------------------------------------------------------------------------------------
def test_await_aio_shows_the_output_and_returns_the_value(
    remote_emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    async def main() -> tuple[int, int]:
        return await square.aio(6), await add.aio(1, 2)  # an async function, and a plain one

    assert asyncio.run(main()) == (36, 3)
    shown = capsys.readouterr()
    assert "MARKER-square-6" in shown.out.splitlines()  # the job's output on stdout, as `square(6)` shows it
    assert re.search(r"hfremote: square: completed", shown.err), shown.err


def test_futures_are_awaitable_and_gather(remote_emulator: Emulator) -> None:
    async def main() -> list[Any]:
        futures = [await square.submit.aio(i) for i in range(3)]  # created off the loop
        assert all(isinstance(f, RemoteFuture) for f in futures)
        values = await asyncio.gather(*futures)
        calls = await asyncio.gather(*(add.aio(i, 10) for i in range(3)))
        direct = await add.submit(2, 2)  # `await f.submit(x)`: the submit itself runs here, then the wait doesn't
        with pytest.raises(MyError, match="n=3 is too big"):
            await fail_over_one.aio(3)
        mixed = await asyncio.gather(fail_over_one.submit(2), fail_over_one.submit(1), return_exceptions=True)
        return [values, calls, direct, mixed]

    values, calls, direct, (error, one) = asyncio.run(main())
    assert values == [0, 1, 4]
    assert calls == [10, 11, 12]
    assert direct == 4
    assert isinstance(error, MyError) and error.code == 2
    assert one == 1


def test_async_map(remote_emulator: Emulator) -> None:
    async def main() -> list[Any]:
        results = square.map.aio(range(5), chunksize=2)
        assert re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{6}", results.run_id)  # known before anything runs
        squares = [r async for r in results]
        pairs = [r async for r in add.starmap.aio([(1, 2), (3, 4)], max_parallel=1)]
        mixed = [r async for r in fail_over_one.map.aio([0, 3, 1], return_exceptions=True)]
        got = []
        with pytest.raises(MyError):
            async for value in fail_over_one.map.aio([1, 5, 0], max_parallel=1):
                got.append(value)
        return [squares, pairs, mixed, got]

    squares, pairs, mixed, got = asyncio.run(main())
    assert squares == [0, 1, 4, 9, 16]
    assert pairs == [3, 7]
    assert mixed[0] == 0 and isinstance(mixed[1], MyError) and mixed[2] == 1
    assert got == [1]  # the results before the failure, in order


# -- the event loop is never blocked -------------------------------------------------------------------
def _start(face: str) -> Coroutine[Any, Any, Any]:
    async def first_of_map() -> Any:
        async for value in square.map.aio([7]):
            return value
        return None

    async def submitted() -> Any:
        return await (await square.submit.aio(7))

    starts = {"aio": lambda: square.aio(7), "submit.aio": submitted, "map.aio": first_of_map}
    return starts[face]()


@pytest.mark.parametrize("face", ["aio", "submit.aio", "map.aio"])
def test_the_loop_runs_while_the_job_is_created(remote_emulator: Emulator, face: str) -> None:
    # The platform asks the client to come back in 2 s: a client that waited on the loop's thread would
    # keep this coroutine from looking until the job exists.
    remote_emulator.faults.add("429 POST /api/jobs/* count=1 retry-after=2")

    def refused() -> bool:
        return any(m == "POST" and s == 429 for _, m, p, s in remote_emulator.requests() if p.startswith("/api/jobs/"))

    async def main() -> Any:
        task = asyncio.ensure_future(_start(face))
        await until(refused, what="the refused job creation")
        assert not remote_emulator.jobs()  # the client is waiting to try again, and the loop runs
        assert not task.done()
        return await asyncio.wait_for(task, RESULT_TIMEOUT)

    assert asyncio.run(main()) == 49
    assert len(remote_emulator.jobs()) == 1  # created once


def test_the_loop_runs_while_the_job_runs(host_remote_emulator: Emulator, tmp_path: Path) -> None:
    marker = tmp_path / "go"

    async def main() -> str:
        task = asyncio.create_task(wait_for_file.aio(str(marker)))  # its logs are followed meanwhile
        await until(running(host_remote_emulator, 1), what="the job to run")
        marker.touch()  # only this coroutine can let the job end: a blocked loop never gets here
        return await asyncio.wait_for(task, RESULT_TIMEOUT)

    assert asyncio.run(main()) == "released"


# -- cancelling --------------------------------------------------------------------------------------
async def _consume_map(detach: bool) -> list[int]:
    return [r async for r in nap.options(detach=detach).map.aio(range(3))]


async def _await_future() -> int:
    future = await nap.submit.aio(0)
    return await future


@pytest.mark.parametrize(
    ("face", "detach", "jobs"),
    [
        ("aio", False, 1),
        ("aio", True, 1),
        ("aio-quiet", False, 1),
        ("future", False, 1),
        ("map", False, 3),
        ("map", True, 3),
    ],
    ids=["aio", "aio-detach", "aio-no-logs", "future", "map", "map-detach"],
)
def test_cancelling_the_awaiting_task_cancels_the_jobs(
    remote_emulator: Emulator, face: str, detach: bool, jobs: int
) -> None:
    def start() -> Coroutine[Any, Any, Any]:
        if face == "aio":
            return nap.options(detach=detach).aio(1)
        if face == "aio-quiet":
            return nap.options(stream_logs=False).aio(1)
        if face == "future":
            return _await_future()
        return _consume_map(detach)

    async def main() -> list[str]:
        task = asyncio.create_task(start())
        ids: list[str] = await until(running(remote_emulator, jobs), what=f"{jobs} running job(s)")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 60)
        return ids

    ids = asyncio.run(main())
    assert len(ids) == jobs
    if detach:
        assert not any(stage == "CANCELED" for stage in stages(remote_emulator).values())  # they outlive the task
        api = HfApi(endpoint=remote_emulator.endpoint, token=remote_emulator.token)
        for job_id in ids:
            api.cancel_job(job_id=job_id, namespace=remote_emulator.user)
    poll(lambda: all_in(remote_emulator, ids, "CANCELED"), 60, what="the jobs to be CANCELED")


def test_closing_an_async_map_cancels_its_jobs(remote_emulator: Emulator) -> None:
    async def main() -> list[str]:
        results = nap.map.aio(range(3))
        waiting = asyncio.ensure_future(results.__anext__())
        ids: list[str] = await until(running(remote_emulator, 3), what="3 jobs, one running")
        await results.aclose()  # from another task than the one waiting for a result
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, 60)
        with pytest.raises(StopAsyncIteration):
            await results.__anext__()
        return ids

    ids = asyncio.run(main())
    poll(lambda: all_in(remote_emulator, ids, "CANCELED"), 60, what="the jobs to be CANCELED")


CTRL_C_SCRIPT = """
import asyncio

from hfremote import remote


@remote(timeout=120)
async def napper():
    print("MARKER-napping-now", flush=True)
    await asyncio.sleep(110)
    return "woke"


async def main():
    print("result:", await napper.aio())


asyncio.run(main())
"""


def test_ctrl_c_under_asyncio_run_cancels_the_job(remote_emulator: Emulator, tmp_path: Path) -> None:
    proc = start_script(remote_emulator, tmp_path, "ctrl_c_async.py", CTRL_C_SCRIPT)
    try:
        stdout = Lines(proc.stdout)  # type: ignore[arg-type]
        stdout.wait_for(r"^MARKER-napping-now$")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        errors = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    found = re.search(r"hfremote: cancelled job ([0-9a-f]+) \(", errors)
    assert found, errors
    job_id = found.group(1)
    poll(lambda: all_in(remote_emulator, [job_id], "CANCELED"), 60, what="the job to be CANCELED")


# -- found by an attack --------------------------------------------------------------------------------
@remote(timeout=120, stream_logs=False)
def cancels_itself(x: int) -> int:
    raise asyncio.CancelledError(f"the job's own {x}")


def test_a_cancelled_error_raised_in_the_job_is_a_failure_not_a_cancel(remote_emulator: Emulator) -> None:
    async def main() -> list[BaseException | int]:
        return await asyncio.gather(cancels_itself.aio(1), add.aio(1, 1), return_exceptions=True)

    first, second = asyncio.run(main())
    assert second == 2
    assert isinstance(first, hfremote.RemoteError) and "CancelledError" in str(first), first
    future = cancels_itself.submit(2)
    assert isinstance(future.exception(timeout=RESULT_TIMEOUT), hfremote.RemoteError)
    assert not future.cancelled()


def test_a_map_cut_by_a_timeout_says_so_instead_of_ending(remote_emulator: Emulator) -> None:
    async def main() -> tuple[list[int], BaseException]:
        results = nap.map.aio([1, 2])
        got: list[int] = []
        with pytest.raises(asyncio.TimeoutError):
            got.append(await asyncio.wait_for(results.__anext__(), 1.0))
        with pytest.raises(asyncio.CancelledError) as cut:
            await results.__anext__()
        return got, cut.value

    got, cut = asyncio.run(main())
    assert got == [] and "resume=" in str(cut)
