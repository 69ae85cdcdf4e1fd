"""Executor: a standard `concurrent.futures.Executor` whose calls run as Hugging Face jobs.

    with hfremote.Executor(flavor="cpu-upgrade", max_workers=8) as ex:
        future = ex.submit(train, 3e-4)              # a RemoteFuture at once
        for out in ex.map(score, items, chunksize=16): ...

    submit(fn, ...) ──► the run of `fn` in this executor (made on its first call) ──► pack the call now
        ──► a RemoteFuture, stage QUEUED (no job yet) ──► the launcher thread: while fewer than
        max_workers jobs are unfinished, upload the queued calls (one batch per run) and create
        their jobs ──► the engine watches them and completes the futures

One run per distinct function: its calls share the uploaded function and the run's lease, each as
input `<index>` in chunk `<index>-1` of the run (as `_function.launch_one` does; the executor makes
the future first and the job later, when a slot frees up). A map chunk is `<first>-<count>`: one job,
several inputs.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, ParamSpec, TypeVar

from huggingface_hub import JobInfo

from ._calls import PackedCall
from ._config import current_hub
from ._engine import engine
from ._function import RemoteFunction, follow, new_run
from ._future import RemoteFuture
from ._options import Options, build
from ._packing import check_function
from ._run import Run, chunk_name
from .errors import BackendError, HFRemoteError, OptionsError, RemoteTraceback

P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger("hfremote")

DEFAULT_MAX_WORKERS = 16  # as map's max_parallel: jobs run elsewhere, the local CPU count says nothing
QUEUED = "QUEUED"  # the stage of a call waiting in the executor for a slot: it has no job yet
_CREATE_THREADS = 8


class _Entry:
    """The run of one function in an executor, and how many of its calls are unfinished.

    `kept`: a named function's run serves every later call of the executor. Any other callable (a bound
    method, a partial, a lambda, a callable object) carries state that travels with it: its run serves
    the calls made while some are unfinished, then a later call packs it afresh (and the executor holds
    no reference to it once its calls are done)."""

    def __init__(self, key: tuple[Any, ...], fn: Callable[..., Any], run: Run, kept: bool) -> None:
        self.key, self.fn, self.run, self.kept = key, fn, run, kept
        self.next_index = 0
        self.unfinished = 0
        self._lease_lock = threading.Lock()
        self._release: Callable[[], None] | None = None

    def hold_lease(self) -> None:
        """Keep the run's lease fresh from its first upload for as long as the run may get calls: a job
        reads it when it starts, and one started after a pause must not find it stale."""
        with self._lease_lock:
            run, ttl = self.run, self.run.lease_ttl
            if self._release is None and ttl is not None:
                self._release = engine().hold_lease(run.hub, run.bucket, run.layout.lease, ttl)

    def release_lease(self) -> None:
        with self._lease_lock:
            release, self._release = self._release, None
        if release is not None:
            release()


class _Pending(RemoteFuture[Any]):
    """An executor's future: made at submit, before its job exists.

    Until the launcher creates the job, `stage` is "QUEUED", `job_id` and `url` are "", and `logs`
    waits for the job; `cancel()` then only changes the state (the launcher cancels a job it was
    creating meanwhile). Once the job exists it is a RemoteFuture like any other. A map chunk's
    future (`indexes` set) gives each input's (ok, value) as ChunkFuture does."""

    def __init__(self, lock: threading.RLock, entry: _Entry, inputs: list[tuple[int, PackedCall]], chunk: bool) -> None:
        run = entry.run
        first = inputs[0][0]
        placeholder = JobInfo(
            id="",
            owner={"id": "", "name": run.namespace, "type": "user"},
            status={"stage": QUEUED},
            flavor=run.options.flavor,
            endpoint=run.hub.endpoint,
        )
        placeholder.url = ""
        super().__init__(
            run.hub,
            run.namespace,
            placeholder,
            run.run_id,
            chunk_name(first, len(inputs)),
            name=run.name,
            index=None if chunk else first,
            layout=run.layout,
        )
        self.indexes = [index for index, _ in inputs] if chunk else None
        self.code_files = run.code_files
        self._ex_lock = lock  # the executor's: guards _created, _cancel_asked, _launched
        self._entry: _Entry | None = entry
        self._inputs: list[tuple[int, PackedCall]] | None = inputs
        self._created = False
        self._cancel_asked = False
        self._launched = False  # taken by the launcher: counts against max_workers until done
        self._settled = threading.Event()  # its job exists, or it ended without one

    # -- before the job exists -----------------------------------------------------------------
    @property
    def stage(self) -> str:
        """QUEUED while the call waits in the executor for a slot; then its job's stage."""
        if not self._created:
            return QUEUED if not self.done() else "CANCELED" if self.cancelled() else "ERROR"
        return super().stage

    @property
    def cost(self) -> float | None:
        return super().cost if self._created else 0.0

    def logs(self, follow: bool = False) -> Iterator[str]:
        if follow:
            self._settled.wait()  # bounded by the future itself: it gets a job or ends without one
        if self._created:
            yield from super().logs(follow)

    def log_tail(self, lines: int, tries: int = 8) -> list[str]:
        return super().log_tail(lines, tries) if self._created else []

    def metrics(self) -> dict[str, Any] | None:
        return super().metrics() if self._created else None

    def cancel(self) -> bool:
        with self._ex_lock:
            created = self._created
            self._cancel_asked = self._cancel_asked or not created
        if not created:
            if not Future.cancel(self):  # (outside the lock: it runs the done callbacks)
                return False
            self._notify_cancelled()
            return True
        return super().cancel()

    # -- the launcher ----------------------------------------------------------------------------
    def _started(self, run: Run, info: JobInfo) -> None:
        with self._ex_lock:
            self._info, self._created = info, True
            cancelled = self._cancel_asked or self.cancelled()
        self._settled.set()
        if cancelled:  # cancelled while its job was being created
            engine().cancel_job(self._hub, self.namespace, info.id)
            return
        follow(run, self)

    def _fail_start(self, error: BaseException) -> None:
        self._settled.set()
        self._fail(error)

    def _outcome(self, info: JobInfo, data: bytes | None) -> tuple[bool, Any]:
        if self.indexes is None:
            return super()._outcome(info, data)
        outcomes = self._decode(info, data)
        missing = [i for i in self.indexes if i not in outcomes]
        if missing:
            failure = self._failure(info)
            outcomes.update((i, (False, failure)) for i in missing)
        return True, outcomes


def _key(fn: Callable[..., Any]) -> tuple[Any, ...]:
    if inspect.ismethod(fn):  # `obj.method` is a new object at each access: the same instance's method
        return ("method", id(fn.__self__), id(fn.__func__))
    return ("callable", id(fn))  # (the entry holds `fn`: the id stays its own while the entry lives)


def _named(fn: Callable[..., Any]) -> bool:
    """A function found by its name (not a closure, a lambda, a bound method or a callable object)."""
    if inspect.isfunction(fn):
        return "<" not in fn.__qualname__
    return inspect.isbuiltin(fn) and isinstance(getattr(fn, "__self__", None), (type(None), type(sys)))


class Executor(concurrent.futures.Executor):
    """A `concurrent.futures.Executor` whose calls run as Hugging Face jobs, one job per call (or per
    chunk of a `map`), with at most `max_workers` jobs unfinished at once; calls beyond that wait here.

    `options` are `remote`'s (flavor, timeout, dependencies, env, secrets, ...), checked now. A
    `RemoteFunction` passed to `submit` or `map` runs with its own options, overridden by the ones
    given here. Arguments are checked and pickled at `submit` (a wrong or unpicklable argument raises
    there). The function travels once per executor, on its first call, as in a map: what it reads from
    module globals is what they held then (bound methods and other callables carrying state are packed
    again once their earlier calls are done).

    Leaving the `with` block waits for every call; Ctrl-C there cancels the unfinished calls and their
    jobs (unless detach=True).
    """

    def __init__(self, max_workers: int | None = None, **options: Any) -> None:
        if max_workers is None:
            max_workers = DEFAULT_MAX_WORKERS
        elif not isinstance(max_workers, int) or isinstance(max_workers, bool):
            raise TypeError(f"max_workers={max_workers!r} must be an integer (the most jobs unfinished at once)")
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")  # ThreadPoolExecutor's words
        self._options: Options = build(None, **options)
        if "flavor" in options:  # known to the platform (one cached look at its hardware)
            current_hub().check_flavor(self._options.flavor)
        self._overrides = dict(options)
        self._max_workers = max_workers
        self._lock = threading.RLock()  # re-entrant: a cancel under it runs done callbacks that take it
        self._queue: dict[_Pending, None] = {}  # waiting for a slot, in submission order
        self._unfinished: dict[_Pending, None] = {}
        self._runs: dict[tuple[Any, ...], _Entry] = {}
        self._launched = 0
        self._launcher: threading.Thread | None = None
        self._shutdown = False
        # An executor dropped without shutdown() stops keeping its runs' leases fresh.
        self._finalizer = weakref.finalize(self, _release_all, self._runs)

    @property
    def max_workers(self) -> int:
        return self._max_workers

    @property
    def settings(self) -> Options:
        """The options this executor's jobs are created with."""
        return self._options

    # -- submitting ------------------------------------------------------------------------------
    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> RemoteFuture[R]:
        """Run `fn(*args, **kwargs)` as a job; its future at once (the call waits here while
        `max_workers` jobs are unfinished)."""
        self._check_open()
        entry = self._entry(fn)
        try:
            (index,) = self._take_indexes(entry, 1)
            call = entry.run.packer.pack(args, kwargs)  # a wrong or unpicklable argument fails here
        except BaseException:
            self._release(entry)
            raise
        return self._enqueue(entry, [(index, call)], chunk=False)

    def map(
        self, fn: Callable[..., R], *iterables: Iterable[Any], timeout: float | None = None, chunksize: int = 1
    ) -> Iterator[R]:
        """`fn(*args)` for args zipped from the iterables, results in order, as `Executor.map`: every call
        is submitted now; `timeout` (seconds, from this call) bounds the wait for each result; an
        exception is raised when its result is reached; closing the iterator cancels what is left.
        `chunksize` inputs run in each job (one job per input by default)."""
        if not isinstance(chunksize, int) or isinstance(chunksize, bool) or chunksize < 1:
            raise OptionsError(f"chunksize={chunksize!r} must be an integer >= 1 (inputs per job)")
        end = None if timeout is None else timeout + time.monotonic()
        submitted: list[RemoteFuture[Any]] = []
        try:
            if chunksize == 1:
                submitted.extend(self.submit(fn, *args) for args in zip(*iterables, strict=False))
            else:
                calls = zip(*iterables, strict=False)
                while chunk := [args for _, args in zip(range(chunksize), calls, strict=False)]:
                    submitted.append(self._submit_chunk(fn, chunk))
        except BaseException:  # a bad input: the calls submitted before it are not left running
            for future in submitted:
                future.cancel()
            raise
        if chunksize == 1:
            return _results(submitted, end)
        return _chunked_results(submitted, end)

    def _submit_chunk(self, fn: Callable[..., Any], chunk: list[tuple[Any, ...]]) -> RemoteFuture[Any]:
        self._check_open()
        entry = self._entry(fn)
        try:
            indexes = self._take_indexes(entry, len(chunk))
            calls = entry.run.packer.pack_many((args, {}) for args in chunk)
        except BaseException:
            self._release(entry)
            raise
        return self._enqueue(entry, list(zip(indexes, calls, strict=True)), chunk=True)

    def _check_open(self) -> None:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _entry(self, fn: Callable[..., Any]) -> _Entry:
        """The run of `fn` in this executor, with one more unfinished call counted."""
        key = _key(fn)
        with self._lock:
            entry = self._runs.get(key)
            if entry is not None:
                entry.unfinished += 1
                return entry
        # Made outside the lock (packing the function, checking the flavor): completions go on meanwhile.
        if isinstance(fn, RemoteFunction):
            function: Callable[..., Any] = fn.function
            options = build(fn.settings, **self._overrides) if self._overrides else fn.settings
        else:
            if not callable(fn):
                raise TypeError(f"submit() needs a callable, got {type(fn).__name__} {fn!r}")
            check_function(fn)
            function, options = fn, self._options
        made = _Entry(key, fn, new_run(function, options), _named(function))
        with self._lock:
            entry = self._runs.setdefault(key, made)  # another thread may have made one meanwhile
            entry.unfinished += 1
        return entry

    def _take_indexes(self, entry: _Entry, count: int) -> range:
        with self._lock:
            first = entry.next_index
            entry.next_index += count
        return range(first, first + count)

    def _release(self, entry: _Entry) -> None:
        with self._lock:
            entry.unfinished -= 1
            if entry.unfinished <= 0 and (not entry.kept or self._shutdown) and self._runs.get(entry.key) is entry:
                del self._runs[entry.key]
                entry.release_lease()

    def _enqueue(self, entry: _Entry, inputs: list[tuple[int, PackedCall]], chunk: bool) -> _Pending:
        future = _Pending(self._lock, entry, inputs, chunk)
        future.add_done_callback(self._done)
        with self._lock:
            if self._shutdown:
                shut = True
            else:
                shut = False
                self._unfinished[future] = None
                self._queue[future] = None
                self._pump()
        if shut:
            self._release(entry)
            raise RuntimeError("cannot schedule new futures after shutdown")
        return future

    def _done(self, future: Future[Any]) -> None:
        assert isinstance(future, _Pending)
        with self._lock:
            self._unfinished.pop(future, None)
            self._queue.pop(future, None)
            if future._launched:
                self._launched -= 1
                future._launched = False
            entry, future._entry, future._inputs = future._entry, None, None
            self._pump()
        future._settled.set()
        if entry is not None:
            self._release(entry)

    # -- launching -------------------------------------------------------------------------------
    def _pump(self) -> None:
        """(Under the lock.) Start the launcher if calls wait and a slot is free."""
        if self._queue and self._launched < self._max_workers and self._launcher is None:
            self._launcher = threading.Thread(target=self._launch_loop, name="hfremote-executor", daemon=True)
            self._launcher.start()

    def _launch_loop(self) -> None:
        while True:
            if engine().closing.is_set():  # the process is ending: what waits here never gets a job
                with self._lock:
                    queued, self._launcher = list(self._queue), None
                for future in queued:
                    future.cancel()
                return
            with self._lock:
                batch: list[tuple[_Pending, _Entry]] = []
                while self._queue and self._launched < self._max_workers:
                    future = next(iter(self._queue))
                    del self._queue[future]
                    if future.done() or future._entry is None:
                        continue
                    future._launched = True
                    self._launched += 1
                    batch.append((future, future._entry))
                if not batch:
                    self._launcher = None
                    return
            try:
                _start(batch)
            except BaseException as e:  # never die silently: what was not started fails, clearly
                log.exception("hfremote: the executor could not start jobs")
                failure = BackendError(f"the executor could not start the job: {type(e).__name__}: {e}")
                for future, _ in batch:
                    if not future._created:
                        future._fail_start(failure)

    # -- ending ----------------------------------------------------------------------------------
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more calls. `cancel_futures`: cancel the calls still waiting for a slot (jobs already
        created run to their end); `wait`: return once every call has finished."""
        with self._lock:
            self._shutdown = True
            queued = list(self._queue) if cancel_futures else []
            pending = list(self._unfinished)
            idle = [e for e in self._runs.values() if e.unfinished <= 0]
            for entry in idle:
                del self._runs[entry.key]
        for entry in idle:
            entry.release_lease()
        for future in queued:
            future.cancel()
        if wait:
            try:
                concurrent.futures.wait(pending)  # bounded: the engine fails futures whose endpoint is gone
            except KeyboardInterrupt:
                self._interrupted()
                raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, KeyboardInterrupt) and not isinstance(exc.__cause__, RemoteTraceback):  # a Ctrl-C here
            self._interrupted()
            return
        self.shutdown(wait=True)

    def _interrupted(self) -> None:
        """Ctrl-C: the calls waiting here are cancelled; the jobs too, unless the executor detaches."""
        with self._lock:
            self._shutdown = True
            queued = list(self._queue)
            running = [f for f in self._unfinished if f not in self._queue]
        for future in queued:
            future.cancel()
        if self._options.detach:
            ids = ", ".join(f.job_id for f in running if f.job_id)
            print(
                f"\nhfremote: executor interrupted; detached: {len(running)} job(s) keep running {ids}", file=sys.stderr
            )
            return
        count = sum(1 for future in running if future.cancel())
        print(f"\nhfremote: executor interrupted; cancelled {count + len(queued)} unfinished call(s)", file=sys.stderr)

    def __repr__(self) -> str:
        return (
            f"<hfremote.Executor flavor={self._options.flavor} max_workers={self._max_workers} "
            f"unfinished={len(self._unfinished)}{' shut down' if self._shutdown else ''}>"
        )


def _release_all(runs: dict[tuple[Any, ...], _Entry]) -> None:
    for entry in list(runs.values()):
        entry.release_lease()


def _start(batch: list[tuple[_Pending, _Entry]]) -> None:
    """Upload the batch's calls (one upload per run) and create their jobs, a few at a time."""
    groups: dict[int, list[_Pending]] = {}
    entries: dict[int, _Entry] = {}
    for future, entry in batch:
        groups.setdefault(id(entry), []).append(future)
        entries[id(entry)] = entry
    creating: list[tuple[_Pending, Run]] = []
    for key, group in groups.items():
        entry = entries[key]
        run = entry.run
        live = [(f, f._inputs) for f in group if not f.done() and f._inputs is not None]
        if not live:
            continue
        try:
            run.upload({f.call: inputs for f, inputs in live if inputs is not None})
        except Exception as e:
            failure = e if isinstance(e, HFRemoteError) else BackendError(f"uploading the calls of {run.name}: {e}")
            for f, _ in live:
                f._fail_start(failure)
            continue
        entry.hold_lease()
        for f, _ in live:
            f._inputs = None  # uploaded: the packed arguments are not needed here any more
            creating.append((f, run))
    parts = [creating[i::_CREATE_THREADS] for i in range(min(_CREATE_THREADS, len(creating)))]
    if len(parts) <= 1:
        for part in parts:
            _create(part)
        return
    threads = [threading.Thread(target=_create, args=(p,), name="hfremote-create", daemon=True) for p in parts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()  # bounded: each creation gives up after the hub's retries


def _create(part: list[tuple[_Pending, Run]]) -> None:
    for future, run in part:
        try:
            info = engine().create(run, future.call)
        except Exception as e:
            failure = e if isinstance(e, HFRemoteError) else BackendError(f"creating the job of {run.name}: {e}")
            future._fail_start(failure)
            continue
        if info is None:  # the process is ending (exit, SIGTERM): no job, or it was cancelled with the others
            Future.cancel(future)
            future._settled.set()
            continue
        future._started(run, info)


def _result_or_cancel(future: Future[Any], end: float | None) -> Any:
    try:
        try:
            return future.result(None if end is None else end - time.monotonic())
        finally:
            future.cancel()
    finally:
        del future  # (the result is not kept alive by this frame: Executor.map's own care)


def _results(futures: list[RemoteFuture[Any]], end: float | None) -> Iterator[Any]:
    try:
        futures.reverse()
        while futures:
            yield _result_or_cancel(futures.pop(), end)
    finally:
        for future in futures:
            future.cancel()


def _chunked_results(futures: list[RemoteFuture[Any]], end: float | None) -> Iterator[Any]:
    try:
        futures.reverse()
        while futures:
            outcomes: dict[int, tuple[bool, Any]] = _result_or_cancel(futures.pop(), end)
            for index in sorted(outcomes):
                ok, value = outcomes.pop(index)
                if not ok:
                    raise value
                yield value
                del value
    finally:
        for future in futures:
            future.cancel()
