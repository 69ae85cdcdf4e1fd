"""What a remote function becomes inside a job: plain calls. Standard library only.

A function running in a job that calls another remote function (or itself) calls it in the same process:
the job has no Hugging Face token and no hfremote, and a job starting jobs would multiply the bill.
This class travels by value (cloudpickle), so the job needs nothing of hfremote to run it.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any


class LocalFunction:
    """A remote function's plain twin: the same methods (`submit`, `map`, `local`, ...), run in-process."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.function = fn
        self.__wrapped__ = fn
        self.__doc__ = getattr(fn, "__doc__", None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def local(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(self.function(*args, **kwargs))
        except Exception as e:
            future.set_exception(e)
        return future

    def map(self, *iterables: Iterable[Any], return_exceptions: bool = False, **_: Any) -> Iterator[Any]:
        return self.starmap(zip(*iterables, strict=False), return_exceptions=return_exceptions)

    def starmap(self, iterable: Iterable[Iterable[Any]], return_exceptions: bool = False, **_: Any) -> Iterator[Any]:
        for args in iterable:
            try:
                yield self.function(*args)
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
