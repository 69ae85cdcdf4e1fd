"""What a remote function becomes inside a job: plain calls. Standard library only.

A function running in a job that calls another remote function (or itself) calls it in the same process:
the job has no Hugging Face token and no hfremote, and a job starting jobs would multiply the bill.
This class travels by value (cloudpickle), so the job needs nothing of hfremote to run it. An async
function's plain call runs its coroutine to the end, and its `aio`, `map.aio`, ... await it, as on the client.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
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


SETUP_MARK = "__hfremote_setup__"  # set on a class's setup methods by hfremote.setup


class Built:
    """One instance of a remote class, built at first use: shared by the methods of one handle."""

    def __init__(self) -> None:
        self.state: tuple[bool, Any] | None = None  # (built, the instance) or (False, (exception, traceback))
        self.lock = threading.Lock()

    def get(self, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The instance, for a plain method (an async setup runs on a loop of its own)."""
        with self.lock:
            if self.state is None:
                steps = _setting_up(cls, args, kwargs)
                try:
                    while True:
                        done = next(steps)
                        if inspect.iscoroutine(done):
                            asyncio.run(done)
                except StopIteration as end:
                    self.state = (True, end.value)
                except BaseException as e:
                    self.state = (False, (e, e.__traceback__))
        return self._outcome()

    async def aget(self, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The instance, for an async method: an async setup runs on the method's loop (the job's), so what
        it opens (a client session) is usable by every input."""
        if self.state is None:  # the job's inputs run one at a time on its loop
            steps = _setting_up(cls, args, kwargs)
            try:
                while True:
                    done = next(steps)
                    if inspect.iscoroutine(done):
                        await done
            except StopIteration as end:
                self.state = (True, end.value)
            except BaseException as e:
                self.state = (False, (e, e.__traceback__))
        return self._outcome()

    def _outcome(self) -> Any:
        assert self.state is not None
        built, value = self.state
        if built:
            return value
        error, traceback = value
        raise error.with_traceback(traceback)  # the first traceback each time, not one growing per input


class InstanceMethod:
    """A method of a remote class's instance built where it runs: in a job, once per job.

    The class and its constructor's arguments travel once, in the run's function file, not with each
    input; the instance is made at the first input a job runs, its setup methods (marked with
    `hfremote.setup`) run right after, and every later input of the job reuses it. A failed setup fails
    each of the job's inputs with the same exception, without trying again. Here (`.local`), the methods
    of one handle share one instance.
    """

    def __init__(
        self, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], name: str, built: Built | None = None
    ) -> None:
        self.cls, self.args, self.kwargs, self.name = cls, args, kwargs, name
        self.__module__ = cls.__module__  # names the jobs and labels after the method: `Embedder.embed`
        self.__qualname__ = f"{cls.__qualname__}.{name}"
        self.__name__ = name
        self.__doc__ = getattr(getattr(cls, name, None), "__doc__", None)
        self._built = built or Built()

    @property
    def __signature__(self) -> inspect.Signature:
        """The method's signature without `self`: calls are checked here, before anything travels."""
        method = inspect.getattr_static(self.cls, self.name)
        if isinstance(method, staticmethod):
            return inspect.signature(method.__func__)
        target = getattr(method, "function", method)  # a method that is itself a RemoteFunction
        parameters = list(inspect.signature(target).parameters.values())
        if parameters and parameters[0].kind in (parameters[0].POSITIONAL_ONLY, parameters[0].POSITIONAL_OR_KEYWORD):
            parameters = parameters[1:]  # `self` (not a `*args` that takes it: a decorator without wraps)
        return inspect.Signature(parameters)

    def instance(self) -> Any:
        return self._built.get(self.cls, self.args, self.kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if inspect.iscoroutinefunction(getattr(self.cls, self.name, None)):
            return self._acall(args, kwargs)  # awaited by the job (or by the caller of `.local`)
        return getattr(self.instance(), self.name)(*args, **kwargs)

    async def _acall(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        obj = await self._built.aget(self.cls, self.args, self.kwargs)
        return await getattr(obj, self.name)(*args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        # A fresh instance wherever this lands (each job builds its own); the lock cannot travel.
        return {k: v for k, v in self.__dict__.items() if k != "_built"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _built=Built())

    def __repr__(self) -> str:
        return f"<method {self.__qualname__} of a remote instance>"


def _setting_up(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Generator[Any, None, Any]:
    """Build an instance and run its setup methods, yielding what each returns (an async one's coroutine,
    for the caller to run its own way); returns the instance."""
    obj = cls(*args, **kwargs)
    for attr in setup_methods(cls):
        yield getattr(obj, attr)()
    return obj


def setup_methods(cls: type) -> list[str]:
    """The names of the class's setup methods, base classes' first, each in the order it was defined."""
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            if getattr(value, SETUP_MARK, False) and attr not in names:
                names.append(attr)
    return names


class LocalInstance:
    """A remote class's handle as it travels into a job: its methods are LocalFunctions on one instance
    built (and set up) there."""

    def __init__(self, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._builder = InstanceMethod(cls, args, kwargs, "")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return LocalFunction(getattr(self._builder.instance(), name))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._builder.instance()(*args, **kwargs)


def same(value: Any) -> Any:
    """A remote class as it travels into a job: the plain class itself (its own methods may name it)."""
    return value


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
