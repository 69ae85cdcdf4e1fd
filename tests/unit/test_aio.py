"""The asyncio pieces that need no job: waiting on a concurrent future from a loop, the `.aio` faces'
descriptor, and a remote function's plain twin in a job (`LocalFunction`) with an async function."""

from __future__ import annotations

import asyncio
import inspect
import pickle
import threading
from concurrent.futures import Future
from typing import Any

import pytest

from hfremote._aio import Face, in_thread, until_done, with_aio
from hfremote._inside import LocalFunction


# -- until_done ----------------------------------------------------------------------------------------
def test_until_done_wakes_when_the_future_is_set_from_another_thread() -> None:
    future: Future[int] = Future()

    async def main() -> bool:
        threading.Thread(target=future.set_result, args=(3,)).start()
        return await until_done(future)

    assert asyncio.run(main()) is True
    assert future.result() == 3


def test_cancelling_the_wait_leaves_the_future_alone() -> None:
    future: Future[int] = Future()

    async def main() -> None:
        waiting = asyncio.create_task(until_done(future))
        await asyncio.sleep(0)  # let it start waiting
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(main())
    assert not future.cancelled() and not future.done()
    future.set_result(1)  # the loop is closed now: its wake-up is dropped, nothing raises


def test_until_done_with_a_timeout_says_whether_it_finished() -> None:
    future: Future[int] = Future()

    async def main() -> bool:
        return await until_done(future, timeout=0.01)

    assert asyncio.run(main()) is False


def test_in_thread_keeps_what_the_work_raises() -> None:
    def boom() -> None:
        raise KeyboardInterrupt  # even a BaseException lands in the future, never lost with its thread

    future = in_thread(boom, "test")
    with pytest.raises(KeyboardInterrupt):
        future.result(timeout=10)


# -- the `.aio` faces ----------------------------------------------------------------------------------
class Thing:
    def __init__(self, base: int) -> None:
        self.base = base

    async def _twice_aio(self, /, x: int) -> int:
        return 2 * (self.base + x)

    @with_aio(_twice_aio)
    def twice(self, /, x: int) -> int:
        """Twice base plus x."""
        return 2 * (self.base + x)


def test_a_method_with_an_aio_twin() -> None:
    thing = Thing(1)
    assert thing.twice(2) == 6
    assert asyncio.run(thing.twice.aio(2)) == 6
    assert isinstance(thing.twice, Face)
    assert thing.twice.__doc__ == "Twice base plus x."
    assert list(inspect.signature(thing.twice).parameters) == ["x"]
    assert Thing.twice.__doc__ == "Twice base plus x."  # on the class: the descriptor itself


# -- in a job: LocalFunction ---------------------------------------------------------------------------
async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


def increment(x: int) -> int:
    return x + 1


def test_a_plain_call_of_an_async_function_in_a_job_gives_its_value() -> None:
    local = LocalFunction(double)
    assert local(3) == 6
    assert inspect.iscoroutine(coroutine := local.local(3))
    assert asyncio.run(coroutine) == 6
    assert local.submit(4).result() == 8
    assert list(local.map([1, 2])) == [2, 4]
    assert list(local.starmap([(5,)])) == [10]


def test_a_plain_call_from_a_coroutine_in_a_job() -> None:
    async def main() -> int:
        return LocalFunction(double)(5)  # the caller's loop is busy: the call gets its own

    assert asyncio.run(main()) == 10


@pytest.mark.parametrize("fn", [double, increment], ids=["async", "plain"])
def test_the_async_faces_in_a_job(fn: Any) -> None:
    local = LocalFunction(fn)
    expected = [fn(x) if fn is increment else 2 * x for x in (1, 2, 3)]

    async def main() -> list[Any]:
        one = await local.aio(1)
        submitted = await local.submit(2)  # a finished future, awaitable
        via_aio = (await local.submit.aio(3)).result()
        mapped = [r async for r in local.map.aio([1, 2, 3])]
        starred = [r async for r in local.starmap.aio([(1,), (2,), (3,)])]
        return [[one, submitted, via_aio], mapped, starred]

    assert asyncio.run(main()) == [expected, expected, expected]


def test_a_local_functions_faces_travel_by_value() -> None:
    import cloudpickle

    from hfremote import _inside

    cloudpickle.register_pickle_by_value(_inside)
    try:
        data = cloudpickle.dumps(LocalFunction(increment))
    finally:
        cloudpickle.unregister_pickle_by_value(_inside)
    again = pickle.loads(data)
    assert again.map([1]).__next__() == 2
    assert asyncio.run(again.aio(1)) == 2
