"""asyncio faces of a remote function: `await f.aio(x)`, `await f.submit.aio(x)`, `async for r in f.map.aio(xs)`.

    coroutine (event loop thread)              threads of hfremote
    ─────────────────────────────              ───────────────────
    await f.aio(x) ──────────────────────────► submit: pack, upload, create the job
       waits on a loop future  ◄── done ───── follow: the job's logs, then its value (`follow_call`)
    task cancelled ──► job cancel queued (unless detach), the follow thread told to stop
    async for r in f.map.aio(xs) ────────────► one `next()` of the blocking map per step
    task cancelled ──► map.stop(): it ends at its next step, as on Ctrl-C

No request is ever made on the event loop's thread: blocking work runs on threads of its own (not the
loop's default executor, whose few workers would make concurrent calls wait for each other), and the
coroutine waits on a loop future that the work's completion sets. Cancelling the awaiting task (Ctrl-C
under `asyncio.run` does) cancels the job, unless the function was made with `detach=True`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import types
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from ._console import Console, follow_call
from ._engine import engine
from ._future import RemoteFuture
from ._map import MapResults
from ._options import Options

P = ParamSpec("P")
AP = ParamSpec("AP")
S = TypeVar("S")
T = TypeVar("T")
AT = TypeVar("AT")
R = TypeVar("R")

_STOP_SECONDS = 30.0  # how long a cancelled task waits for its job's cancel to be sent (or its creation to end)


# -- `f.map` and `f.map.aio` ---------------------------------------------------------------------------
class Face(Generic[P, T, AP, AT]):
    """A method with an asyncio twin, bound to its object: `f.map(xs)` calls it, `f.map.aio(xs)` the twin."""

    def __init__(self, owner: Any, name: str, call: Callable[P, T], aio: Callable[AP, AT]) -> None:
        self._owner, self._name, self._call = owner, name, call
        self.aio = aio
        functools.update_wrapper(self, call)  # help() and inspect.signature show the method

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._call(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (getattr, (self._owner, self._name))  # in a job: the LocalFunction's own face

    def __repr__(self) -> str:
        return f"<{self._name} of {self._owner!r} (and .aio)>"


class Faced(Generic[S, P, T, AP, AT]):
    """The descriptor `with_aio` makes of a method: a bound `Face` on each access."""

    def __init__(self, call: Callable[Concatenate[S, P], T], aio: Callable[Concatenate[S, AP], AT]) -> None:
        self._call, self._aio = call, aio
        self._name = getattr(call, "__name__", "method")
        self.__doc__ = call.__doc__

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name = name

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Faced[S, P, T, AP, AT]: ...

    @overload
    def __get__(self, instance: S, owner: type[Any] | None = None) -> Face[P, T, AP, AT]: ...

    def __get__(self, instance: Any, owner: type[Any] | None = None) -> Any:
        if instance is None:
            return self
        return Face(instance, self._name, types.MethodType(self._call, instance), types.MethodType(self._aio, instance))


def with_aio(
    aio: Callable[Concatenate[S, AP], AT],
) -> Callable[[Callable[Concatenate[S, P], T]], Faced[S, P, T, AP, AT]]:
    """Give a method an asyncio twin reached as `obj.method.aio(...)` (Modal's spelling); both are typed."""

    def decorate(call: Callable[Concatenate[S, P], T]) -> Faced[S, P, T, AP, AT]:
        return Faced(call, aio)

    return decorate


# -- blocking work off the loop ------------------------------------------------------------------------
def in_thread(work: Callable[[], T], name: str) -> Future[T]:
    """Run `work` on a daemon thread of its own; its outcome (whatever it raises) lands in the future."""
    future: Future[T] = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(work())
        except BaseException as e:  # kept for whoever reads the future: a thread never dies silently
            future.set_exception(e)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


async def until_done(future: Future[Any], timeout: float | None = None) -> bool:
    """Wait for a concurrent future without blocking the loop; whether it is done. Unlike awaiting
    `asyncio.wrap_future(future)`, cancelling the wait leaves the future alone: the caller decides."""
    if future.done():
        return True
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()

    def wake(_: Future[Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile: nobody is waiting
            loop.call_soon_threadsafe(_settle, woken)

    future.add_done_callback(wake)
    if timeout is None:
        await woken
    else:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(woken, timeout)
    return future.done()


def _settle(woken: asyncio.Future[None]) -> None:
    if not woken.done():  # cancelled: the wait was given up
        woken.set_result(None)


# -- one call ------------------------------------------------------------------------------------------
async def created(submit: Callable[[], RemoteFuture[R]], options: Options) -> RemoteFuture[R]:
    """`f.submit(x)` without blocking the loop: the job's future once it exists. Cancelled meanwhile, the
    job is cancelled as soon as it exists (unless detached): the caller never got its future to do it."""
    creating = in_thread(submit, "hfremote-submit")
    try:
        await until_done(creating)
    except asyncio.CancelledError:
        if not options.detach:
            creating.add_done_callback(_cancel_created)
            await until_done(creating, _STOP_SECONDS)  # bounded: creating a job gives up on its own, too
            await until_done(in_thread(engine().flush, "hfremote-flush"), _STOP_SECONDS)
        raise
    return creating.result()


def _cancel_created(creating: Future[RemoteFuture[Any]]) -> None:
    if not creating.cancelled() and creating.exception() is None:
        creating.result().cancel()


async def call(submit: Callable[[], RemoteFuture[R]], options: Options) -> R:
    """`await f.aio(x)`: `f(x)` without blocking the loop, showing the job's output as `f(x)` does."""
    future = await created(submit, options)
    stop = threading.Event()
    if options.stream_logs:
        waited: Future[Any] = in_thread(
            lambda: follow_call(future, options.detach, options.stream_logs, stop), "hfremote-follow"
        )
    else:
        waited = future
    try:
        await until_done(waited)
    except asyncio.CancelledError:
        stop.set()
        if options.detach:
            Console().note(
                f"detached; job {future.job_id} keeps running ({future.url}). "
                f"Follow it with `hfremote attach {future.run_id}`"
            )
        elif future.cancel():  # (not if it has just finished)
            Console().note(f"cancelled job {future.job_id} ({future.url})")
            await until_done(in_thread(engine().flush, "hfremote-flush"), _STOP_SECONDS)
        raise
    value: R = waited.result()
    return value


# -- a map -------------------------------------------------------------------------------------------
_END = object()


class AsyncMapResults(AsyncIterator[R]):
    """What `f.map.aio(...)` returns: the map's results as an async iterator, with its `run_id`.

    The map runs as `f.map` does (the same window, order, retries and errors), one step on a thread per
    `__anext__`, so it launches no more than the consumer reads. Cancelling the task that waits for a
    result (Ctrl-C under `asyncio.run`) stops the map: its unfinished jobs are cancelled, unless
    detach=True. `aclose()`, or leaving `async with f.map.aio(xs) as results:`, stops it too.
    """

    def __init__(self, start: Callable[[], MapResults[R]], run_id: str) -> None:
        self.run_id = run_id
        self._start = start
        self._results: MapResults[R] | None = None
        self._lock = threading.Lock()  # one step at a time: a generator cannot run on two threads at once
        self._stopping = False
        self._finished = False
        self._read = 0  # results handed out
        self._cancelled_at: int | None = None  # stopped by the cancel of a waiting __anext__: at which result

    def __aiter__(self) -> AsyncMapResults[R]:
        return self

    async def __anext__(self) -> R:
        if self._cancelled_at is not None:  # not a normal end: the caller would take a cut map for a whole one
            raise asyncio.CancelledError(
                f"this map was cancelled while waiting for its result {self._cancelled_at} (its task was cancelled, "
                "by asyncio.wait_for say) and its unfinished jobs with it: resume it with "
                f"f.map.aio(<the same inputs>, resume={self.run_id!r})"
            )
        if self._finished:
            raise StopAsyncIteration
        step = in_thread(self._step, "hfremote-map-step")
        try:
            await until_done(step)
        except asyncio.CancelledError:
            self._cancelled_at = self._read
            self._stop()
            await until_done(step, _STOP_SECONDS)  # the map cancels its jobs within one of its steps
            raise
        try:
            value = step.result()
        except BaseException:
            self._finished = True
            if self._stopping:  # aclose() from another task meanwhile: the iteration is over
                raise StopAsyncIteration from None
            raise
        if value is _END:
            self._finished = True
            raise StopAsyncIteration
        self._read += 1
        result: R = value
        return result

    def _step(self) -> Any:
        with self._lock:
            if self._results is None:
                self._results = self._start()  # packs and uploads: off the loop too
                if self._stopping:
                    self._results.stop()
            return next(self._results, _END)

    def _stop(self) -> None:
        self._finished = True
        self._stopping = True
        results = self._results
        if results is not None:
            results.stop()

    def _close(self) -> None:
        with self._lock:
            if self._results is not None:
                self._results.close()

    async def aclose(self) -> None:
        """Stop the map: its unfinished jobs are cancelled (unless detach=True)."""
        if self._finished and self._results is None:
            return
        self._stop()
        await until_done(in_thread(self._close, "hfremote-map-close"), _STOP_SECONDS)

    async def __aenter__(self) -> AsyncMapResults[R]:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # Abandoned mid-way (a `break` out of `async for`): stop its jobs, on a thread, not wherever the
        # garbage collector runs (the loop's, maybe).
        if self._results is not None and not self._finished:
            self._stop()
            results = self._results
            with contextlib.suppress(RuntimeError):  # no new thread at interpreter exit: its lease ends the jobs
                threading.Thread(target=results.close, name="hfremote-map-close", daemon=True).start()

    def __repr__(self) -> str:
        return f"<AsyncMapResults run_id={self.run_id!r}>"
