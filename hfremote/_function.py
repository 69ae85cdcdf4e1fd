"""The `remote` decorator and RemoteFunction: a function that runs as a Hugging Face job when called.

@remote(flavor="a10g-small", timeout="2h")
def train(lr: float) -> dict: ...

train(3e-4)               # blocks, shows the job's output (stdout) and stages (stderr), returns the value
train.submit(3e-4)        # RemoteFuture[dict] at once
train.local(3e-4)         # a plain call
train.options(flavor="a100-large")(1e-3)
await train.aio(3e-4)     # in a coroutine: the call, without blocking the event loop (see _aio.py)

An `async def` function runs on an event loop in the job; calls return its value, `local` its coroutine.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import types
from collections.abc import Callable, Coroutine, Iterable, Sized
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from typing_extensions import TypeVar as DefaultTypeVar  # PEP 696 defaults, in typing from 3.13

from . import _aio
from ._aio import AsyncMapResults, with_aio
from ._calls import PackedCall, Packer, describe, reduce_remote
from ._cls import RemoteClass
from ._config import current_hub, lease_seconds
from ._console import follow_call
from ._engine import engine
from ._future import RemoteFuture, watch
from ._hub import Hub
from ._inside import LocalFunction
from ._map import CostEstimate, MapResults, MapRun, MapSettings, calls_of, estimate, length_of
from ._options import Options, build, check_count
from ._origins import Rules
from ._packing import check_function
from ._remote_run import cancel_stale_runs
from ._run import Run, chunk_name, new_run_id
from ._schedule import ScheduledFunction, schedule
from .errors import BackendError, OptionsError

P = ParamSpec("P")
Q = ParamSpec("Q")
R = TypeVar("R")
S = TypeVar("S")
T = TypeVar("T")
# What `local` (a plain call) returns: R, or for an `async def` function its coroutine, while calls as jobs
# return what the coroutine returns (R). A default keeps `RemoteFunction[[int], str]` meaning a plain function.
L = DefaultTypeVar("L", default=R)
log = logging.getLogger("hfremote")


_swept: dict[tuple[int, str], threading.Thread] = {}
_swept_lock = threading.Lock()


def new_run(fn: Callable[..., Any], options: Options, run_id: str | None = None, packer: Packer | None = None) -> Run:
    """A run of `fn` with a lease, unless it is detached (its jobs then outlive this process).

    The first run of a process in a namespace also cancels, in the background, the jobs that an earlier
    client left running when it was killed (their runs' leases are stale)."""
    run = Run(current_hub(), fn, options, run_id, None if options.detach else lease_seconds(), packer)
    if not options.detach:
        engine().own_run(run.hub, run.namespace, run.run_id)
    key = (id(run.hub), run.namespace)
    with _swept_lock:
        if key not in _swept:
            sweep = threading.Thread(target=_sweep, args=(run.hub, run.namespace), name="hfremote-sweep", daemon=True)
            _swept[key] = sweep
            sweep.start()
    return run


def _sweep(hub: Hub, namespace: str) -> None:
    try:
        cancel_stale_runs(hub, namespace)
    except Exception as e:  # a courtesy to the user's bill: never in the way of the run itself
        log.info("hfremote: could not look for jobs left by killed clients: %s", e)


def launch_one(run: Run, call: PackedCall, index: int = 0) -> RemoteFuture[Any]:
    """Upload one call as input `index` of the run and create its job: the future of a `submit`.

    A run can take many such calls, one job each, under different indexes (an Executor's submits): they
    share its uploaded function and its lease."""
    chunk = chunk_name(index, 1)
    run.upload({chunk: [(index, call)]})
    info = engine().create(run, chunk)
    if info is None:  # the process is ending (exit, SIGTERM): a thread's late call starts no job
        raise BackendError("the process is ending: no new job is created")
    future: RemoteFuture[Any] = RemoteFuture(
        run.hub, run.namespace, info, run.run_id, chunk, run.name, index, run.layout
    )
    follow(run, future)
    return future


def follow(run: Run, future: RemoteFuture[Any]) -> None:
    """Watch the job of one of the run's calls, keeping the run's lease fresh until it ends."""
    future.code_files = run.code_files
    if run.lease_ttl is not None:
        release = engine().hold_lease(run.hub, run.bucket, run.layout.lease, run.lease_ttl)
        future.add_done_callback(lambda _: release())
    watch(future)


class RemoteFunction(Generic[P, R, L]):
    """A function that runs as a Hugging Face job. Calling it blocks; `submit` returns a future; `aio`,
    `submit.aio`, `map.aio` and `starmap.aio` are the same for asyncio code."""

    def __init__(self, fn: Callable[P, L], options: Options) -> None:
        check_function(fn)
        self._fn = fn
        self._options = options
        # A callable instance's attributes (its own `_options`, say) must not land on this object.
        functools.update_wrapper(self, fn, updated=functools.WRAPPER_UPDATES if inspect.isfunction(fn) else ())

    @property
    def function(self) -> Callable[P, L]:
        return self._fn

    @property
    def settings(self) -> Options:
        """The options jobs of this function are created with."""
        return self._options

    def options(self, **overrides: Any) -> RemoteFunction[P, R, L]:
        """A copy with some options changed: `train.options(flavor="a100-large")(lr)`."""
        return RemoteFunction(self._fn, build(self._options, **overrides))

    def local(self, *args: P.args, **kwargs: P.kwargs) -> L:
        """Call the function here, as a plain Python call (an async function's gives its coroutine)."""
        return self._fn(*args, **kwargs)

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """`await f.aio(x)`: `f(x)` in a coroutine, without blocking the event loop. Cancelling the awaiting
        task (Ctrl-C under asyncio.run) cancels the job, unless detach=True."""
        return await _aio.call(lambda: self.submit(*args, **kwargs), self._options)

    async def _submit_aio(self, /, *args: P.args, **kwargs: P.kwargs) -> RemoteFuture[R]:
        """`await f.submit.aio(x)`: the job's future, its upload and creation off the event loop."""
        return await _aio.created(lambda: self.submit(*args, **kwargs), self._options)

    @with_aio(_submit_aio)
    def submit(self, /, *args: P.args, **kwargs: P.kwargs) -> RemoteFuture[R]:
        """Start a job for this call and return its future at once."""
        packer = Packer(self._fn, Rules(self._options.ship, self._options.pin))
        inputs = packer.pack(args, kwargs)  # wrong or unpicklable arguments fail before any request
        return launch_one(new_run(self._fn, self._options, packer=packer), inputs)

    def _map_aio(
        self,
        /,
        *iterables: Iterable[Any],
        chunksize: int = 1,
        max_parallel: int = 16,
        ordered: bool = True,
        return_exceptions: bool = False,
        retries: int = 0,
        progress: bool | None = None,
        logs: str = "errors",
        max_cost_usd: float | None = None,
        resume: str | None = None,
        **options: Any,
    ) -> AsyncMapResults[R]:
        """`async for r in f.map.aio(xs)`: `map` as an async iterator, run off the event loop."""
        settings = MapSettings(
            chunksize, max_parallel, ordered, return_exceptions, retries, progress, logs, max_cost_usd
        )
        return AsyncMapResults(*self._map_start(iterables, False, settings, options, resume))

    def _starmap_aio(
        self,
        /,
        iterable: Iterable[Iterable[Any]],
        chunksize: int = 1,
        max_parallel: int = 16,
        ordered: bool = True,
        return_exceptions: bool = False,
        retries: int = 0,
        progress: bool | None = None,
        logs: str = "errors",
        max_cost_usd: float | None = None,
        resume: str | None = None,
        **options: Any,
    ) -> AsyncMapResults[R]:
        """`async for r in f.starmap.aio(items)`: `starmap` as an async iterator, run off the event loop."""
        settings = MapSettings(
            chunksize, max_parallel, ordered, return_exceptions, retries, progress, logs, max_cost_usd
        )
        return AsyncMapResults(*self._map_start((iterable,), True, settings, options, resume))

    @with_aio(_map_aio)
    def map(
        self,
        /,
        *iterables: Iterable[Any],
        chunksize: int = 1,
        max_parallel: int = 16,
        ordered: bool = True,
        return_exceptions: bool = False,
        retries: int = 0,
        progress: bool | None = None,
        logs: str = "errors",
        max_cost_usd: float | None = None,
        resume: str | None = None,
        **options: Any,
    ) -> MapResults[R]:
        """`fn(*args)` for args zipped from the iterables, as jobs; results in input order (or as they come).

        Each job runs `chunksize` inputs; at most `max_parallel` jobs are unfinished at once. Inputs are
        read lazily. The first failure (after `retries` re-runs of the failed inputs) cancels the map's
        unfinished jobs and raises, unless `return_exceptions`. `progress` shows a bar (default: on a
        terminal); `logs` is "errors" (print failed inputs' log tails), "all" or "none".
        `max_cost_usd` refuses to launch jobs whose worst case (timeout x jobs x price) exceeds it.
        The map's run id is `.run_id` of what this returns; `resume=<run id>` with the same inputs runs
        only the inputs that have no result yet in that run (and waits for those whose jobs still run).
        """
        settings = MapSettings(
            chunksize, max_parallel, ordered, return_exceptions, retries, progress, logs, max_cost_usd
        )
        return self._map(iterables, False, settings, options, resume)

    @with_aio(_starmap_aio)
    def starmap(
        self,
        /,
        iterable: Iterable[Iterable[Any]],
        chunksize: int = 1,
        max_parallel: int = 16,
        ordered: bool = True,
        return_exceptions: bool = False,
        retries: int = 0,
        progress: bool | None = None,
        logs: str = "errors",
        max_cost_usd: float | None = None,
        resume: str | None = None,
        **options: Any,
    ) -> MapResults[R]:
        """Like `map`, with each item of `iterable` unpacked as the arguments: `fn(*item)`."""
        settings = MapSettings(
            chunksize, max_parallel, ordered, return_exceptions, retries, progress, logs, max_cost_usd
        )
        return self._map((iterable,), True, settings, options, resume)

    def _map(
        self,
        iterables: tuple[Iterable[Any], ...],
        star: bool,
        settings: MapSettings,
        options: dict[str, Any],
        resume: str | None,
    ) -> MapResults[R]:
        start, _ = self._map_start(iterables, star, settings, options, resume)
        return start()

    def _map_start(
        self,
        iterables: tuple[Iterable[Any], ...],
        star: bool,
        settings: MapSettings,
        options: dict[str, Any],
        resume: str | None,
    ) -> tuple[Callable[[], MapResults[R]], str]:
        """What starts the map (packing, uploading: an async map does it off the loop), and its run id."""
        # Everything that can be checked is checked now, before the caller starts iterating (`settings`
        # was checked when made).
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        if resume is not None and (not isinstance(resume, str) or not resume.strip()):
            raise OptionsError(f"resume={resume!r} must be the run id of an earlier map, as its results' .run_id")
        chosen = build(self._options, **options) if options else self._options
        run_id = resume or new_run_id()

        def start() -> MapResults[R]:
            run = new_run(self._fn, chosen, run_id)
            total = length_of(iterables)
            return MapResults(MapRun(run, calls_of(iterables, star), settings, total, resume is not None))

        return start, run_id

    def map_cost(self, inputs: int | Sized, chunksize: int = 1, retries: int = 0, **options: Any) -> CostEstimate:
        """The worst case of a map before launching it: jobs x timeout x the flavor's price, counting the
        platform's attempts and the map's `retries` (every input failing every time).

        `inputs` is the number of inputs, or a sized collection of them (a generator would be used up).
        """
        MapSettings(chunksize=chunksize, retries=retries)  # checks them
        settings = build(self._options, **options) if options else self._options
        count = check_count(inputs)
        hub = current_hub()
        hub.check_flavor(settings.flavor)
        price = hub.hardware()[settings.flavor]["price_per_minute"]
        return estimate(price, settings, count, chunksize, retries)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the call as a job and wait for it, showing its output (see `_console.follow_call`)."""
        future = self.submit(*args, **kwargs)
        return wait_streaming(future, self._options)

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> RemoteFunction[P, R, L]: ...

    @overload
    def __get__(
        self: RemoteFunction[Concatenate[S, Q], R, L], instance: S, owner: type[Any] | None = None
    ) -> RemoteFunction[Q, R, L]: ...

    def __get__(self, instance: Any, owner: type[Any] | None = None) -> Any:
        """`@remote` on a method binds like a method: `Trainer().fit(3)` runs `fit(trainer, 3)` as a job,
        with the instance pickled along."""
        if instance is None:
            return self
        return RemoteFunction(types.MethodType(self._fn, instance), self._options)

    def __reduce_ex__(self, protocol: Any) -> str | tuple[Any, ...]:
        # Inside a job (a recursive function, or one that calls another remote function), calls are plain
        # calls: the remote function travels as a LocalFunction, whose class travels by value (see _inside).
        return reduce_remote(self, (LocalFunction, (self._fn,)))

    def __repr__(self) -> str:
        return f"<RemoteFunction {describe(self._fn)} flavor={self._options.flavor}>"


def wait_streaming(future: RemoteFuture[R], options: Options) -> R:
    """Wait for a job, showing its output (see `_console.follow_call`); Ctrl-C cancels it (or detaches, if asked)."""
    value: R = follow_call(future, options.detach, options.stream_logs)
    return value


class _Remote:
    """`remote`: the decorator (`@remote`, `@remote(...)`) and `remote.schedule(...)`."""

    @overload
    def __call__(self, cls: type[T], /) -> RemoteClass[T]: ...  # type: ignore[overload-overlap]  # a class first

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> RemoteFunction[P, R, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> RemoteFunction[P, R]: ...

    @overload
    def __call__(
        self,
        /,
        *,
        flavor: str = ...,
        timeout: int | float | str = ...,
        dependencies: list[str] | tuple[str, ...] = ...,
        detect_dependencies: bool = ...,
        image: str | None = ...,
        python: str = ...,
        env: dict[str, str] | None = ...,
        secrets: list[str] | dict[str, str | None] | None = ...,
        volumes: list[Any] | None = ...,
        labels: dict[str, str] | None = ...,
        attempts: int = ...,
        retries: int = ...,
        namespace: str | None = ...,
        name: str | None = ...,
        detach: bool = ...,
        stream_logs: bool = ...,
    ) -> _Decorator: ...

    def __call__(self, fn: Callable[P, R] | None = None, /, **options: Any) -> Any:
        """Make a function run as a Hugging Face job: `@remote` or `@remote(flavor=..., timeout=...)`.

        On a class, its instances live in jobs (see `_cls`): `Model(args).method.map(inputs)` builds one
        instance per job and runs that job's inputs on it.

        Options (checked now, before anything is uploaded): flavor, timeout ("90s", "30m", "2h", "1d" or
        seconds), dependencies, detect_dependencies, image, python, env, secrets (names read from your
        environment, or values), volumes ("hf://datasets/org/name:/mnt"), labels, attempts (or retries),
        namespace, name, detach (Ctrl-C leaves the job running), stream_logs.
        """
        settings = build(None, **options)
        if fn is not None:
            return _make(fn, settings)
        return _Decorator(settings)

    @staticmethod
    def schedule(
        cron: str, *, concurrency: bool | None = None, suspend: bool | None = None, **options: Any
    ) -> Callable[[Callable[P, R]], ScheduledFunction[P, R]]:
        """`@remote.schedule("@daily", flavor=..., timeout=...)`: a function deployed as a scheduled job."""
        return schedule(cron, concurrency=concurrency, suspend=suspend, **options)

    def __repr__(self) -> str:
        return "<hfremote.remote>"


def _make(fn: Any, settings: Options) -> Any:
    if isinstance(fn, (RemoteClass, RemoteFunction)):  # remote again (new options): of the plain one
        fn = fn.cls if isinstance(fn, RemoteClass) else fn.function
    return RemoteClass(fn, settings) if isinstance(fn, type) else RemoteFunction(fn, settings)


class _Decorator:
    """What `remote(flavor=...)` returns: it makes a remote function, or a remote class."""

    def __init__(self, settings: Options) -> None:
        self._settings = settings

    @overload
    def __call__(self, cls: type[T], /) -> RemoteClass[T]: ...  # type: ignore[overload-overlap]  # a class first

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> RemoteFunction[P, R, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> RemoteFunction[P, R]: ...

    def __call__(self, fn: Any, /) -> Any:
        return _make(fn, self._settings)

    def __repr__(self) -> str:
        return f"<hfremote.remote decorator flavor={self._settings.flavor}>"


remote = _Remote()
