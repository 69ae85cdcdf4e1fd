"""What a remote function becomes inside a job: plain calls. Standard library only.

A function running in a job that calls another remote function (or itself) calls it in the same process:
the job has no Hugging Face token and no hfremote, and a job starting jobs would multiply the bill.
This class travels by value (cloudpickle), so the job needs nothing of hfremote to run it. An async
function's plain call runs its coroutine to the end, and its `aio`, `map.aio`, ... await it, as on the client.
"""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable, Iterator
from concurrent.futures import Future
from typing import Any


class LocalFunction:
    """A remote function's plain twin: the same methods (`submit`, `map`, `local`, `aio`, ...), run in-process."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.function = fn
        self.__wrapped__ = fn
        self.__doc__ = getattr(fn, "__doc__", None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _awaited(self.function(*args, **kwargs))

    def local(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    async def aio(self, *args: Any, **kwargs: Any) -> Any:
        import asyncio
        import inspect

        if inspect.iscoroutinefunction(self.function):
            return await self.function(*args, **kwargs)
        value = await asyncio.to_thread(self.function, *args, **kwargs)  # the caller's other tasks go on meanwhile
        return await value if isinstance(value, Coroutine) else value

    @property
    def submit(self) -> _Face:
        return _Face(self._submit, self._submit_aio)

    @property
    def map(self) -> _Face:
        return _Face(self._map, self._map_aio)

    @property
    def starmap(self) -> _Face:
        return _Face(self._starmap, self._starmap_aio)

    def _submit(self, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = _LocalFuture()
        try:
            future.set_result(self(*args, **kwargs))
        except Exception as e:
            future.set_exception(e)
        return future

    async def _submit_aio(self, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = _LocalFuture()
        try:
            future.set_result(await self.aio(*args, **kwargs))
        except Exception as e:
            future.set_exception(e)
        return future

    def _map(self, *iterables: Iterable[Any], return_exceptions: bool = False, **_: Any) -> Iterator[Any]:
        return self._starmap(zip(*iterables, strict=False), return_exceptions=return_exceptions)

    def _starmap(self, iterable: Iterable[Iterable[Any]], return_exceptions: bool = False, **_: Any) -> Iterator[Any]:
        for args in iterable:
            try:
                yield self(*args)
            except Exception as e:
                if not return_exceptions:
                    raise
                yield e

    def _map_aio(self, *iterables: Iterable[Any], return_exceptions: bool = False, **_: Any) -> AsyncIterator[Any]:
        return self._starmap_aio(zip(*iterables, strict=False), return_exceptions=return_exceptions)

    async def _starmap_aio(
        self, iterable: Iterable[Iterable[Any]], return_exceptions: bool = False, **_: Any
    ) -> AsyncIterator[Any]:
        for args in iterable:
            try:
                yield await self.aio(*args)
            except Exception as e:
                if not return_exceptions:
                    raise
                yield e

    def options(self, **_: Any) -> LocalFunction:
        return self

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        return self if instance is None else LocalFunction(types.MethodType(self.function, instance))

    def __repr__(self) -> str:
        return f"<LocalFunction {getattr(self.function, '__qualname__', self.function)!r} (runs in-process)>"


class _Face:
    """`f.map`, `f.submit`: call it, or `.aio(...)` for its asyncio twin, as on the client."""

    def __init__(self, call: Callable[..., Any], aio: Callable[..., Any]) -> None:
        self._call, self.aio = call, aio

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args, **kwargs)


class _LocalFuture(Future[Any]):
    """A future that can also be awaited (`await f.submit(x)` in an async function)."""

    def __await__(self) -> Generator[Any, None, Any]:
        import asyncio

        return asyncio.wrap_future(self).__await__()


def _awaited(value: Any) -> Any:
    """A plain call's value: an async function's coroutine is run to its end, as on the client."""
    if not isinstance(value, Coroutine):
        return value
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(value)
    # Called from a coroutine: its loop cannot run another until this returns, so the call gets a loop of
    # its own on a thread (the caller's loop waits, as a blocking call from a coroutine does on the client).
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, value).result()
