"""The joblib backend: each batch of a `joblib.Parallel` call runs as a job of one hfremote run.

    Parallel.__call__ ─► configure (n_jobs) ─► start_call: one run (the trampoline packed and checked once)
        │ submit(batch) ──► a plain Future at once; the batch waits in `pending`
        │                     │ at most n_jobs batches have a job at a time
        │                     ▼ a launcher thread: pack the batch, launch_one(run, call, index): one job
        │                RemoteFuture done (engine thread) ─► the completer thread completes the batch's
        │                Future: joblib's callback (its progress, its next dispatch) runs there, never on
        │                the engine's threads
        │ an error in a batch, a timeout, Ctrl-C ─► abort_everything: queued batches dropped, jobs cancelled
        ▼ stop_call: whatever is still unfinished is cancelled; the progress line ends

Every batch of a call shares the run's uploaded function and its lease. The run's function is a
trampoline that calls the batch (a joblib `BatchedCalls`, picklable and callable); the distributions the
batches' objects come from (joblib, scikit-learn, numpy, ...) are found when the first batch is packed
and installed in the jobs, pinned to the versions here.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

try:
    from joblib import parallel as _parallel
    from joblib._parallel_backends import LokyBackend, ParallelBackendBase
except ImportError as e:  # pragma: no cover (joblib is in the dev group)
    raise ImportError(f"hfremote.joblib needs joblib: pip install 'hfremote[joblib]' ({e})") from e

from ._console import format_cost, progress_bar, progress_default
from ._options import Options, build
from .errors import OptionsError, PicklingError, RemoteTraceback

if TYPE_CHECKING:
    from ._calls import PackedCall
    from ._future import RemoteFuture
    from ._run import Run

log = logging.getLogger("hfremote")
NAME = "hfremote"
DEFAULT_JOBS = 16  # jobs at once for n_jobs=-1 (and when no n_jobs is given): map's max_parallel default
_LAUNCHERS = 4  # threads that pack batches and create their jobs (requests, not computation)


def _make_trampoline() -> Callable[[Any], Any]:
    # A function defined in a local scope is pickled by value by cloudpickle (its name cannot be imported),
    # so the job runs it without hfremote installed; it refers to no global of this module.
    def call_batch(batch: Any) -> Any:
        return batch()

    return call_batch


call_batch = _make_trampoline()


class HFRemoteBackend(ParallelBackendBase):  # type: ignore[misc]
    """joblib's `backend="hfremote"`: keyword arguments are `remote()` options, checked when it is made.

    `n_jobs` is the number of jobs at once; -1 (or no n_jobs) means 16, -2 means 15, and so on (as joblib
    counts CPUs); n_jobs=1 runs the tasks in this process, as every joblib backend does.
    """

    default_n_jobs = -1
    supports_retrieve_callback = True  # results are collected as jobs end, not by polling each in turn
    supports_inner_max_num_threads = False
    supports_sharedmem = False  # require="sharedmem" (some scikit-learn internals) runs on local threads
    uses_threads = False

    def __init__(self, nesting_level: int | None = None, inner_max_num_threads: int | None = None, **options: Any):
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
        options.setdefault("name", "joblib")
        self.options: Options = _checked(None, options)
        self._base = self.options  # what parallel_config gave; a Parallel call may add its own (configure)
        self._call: _Call | None = None
        self._n_jobs = DEFAULT_JOBS

    # -- joblib's interface ---------------------------------------------------------------------------
    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            n_jobs = self.default_n_jobs
        if n_jobs < 0:
            return max(DEFAULT_JOBS + 1 + n_jobs, 1)
        return int(n_jobs)

    def configure(self, n_jobs: int | None = 1, parallel: Any = None, **backend_kwargs: Any) -> int:
        # `Parallel(backend="hfremote", flavor=...)` passes its extra keywords here: remote() options too,
        # for this call only (joblib's own settings, such as max_nbytes or prefer, do not apply to jobs)
        extra = {key: value for key, value in backend_kwargs.items() if key not in _JOBLIB_SETTINGS}
        self.options = _checked(self._base, extra) if extra else self._base
        self.parallel = parallel
        self._n_jobs = self.effective_n_jobs(n_jobs)
        return self._n_jobs

    def start_call(self) -> None:
        """One run for the whole Parallel call (its function checked and packed once, now, in the caller)."""
        from ._function import new_run

        self._end_call()
        run = new_run(call_batch, self.options)
        self._call = _Call(run, self._n_jobs, getattr(self.parallel, "n_tasks", None))

    def stop_call(self) -> None:
        self._end_call()

    def submit(self, func: Any, callback: Callable[[Any], Any] | None = None) -> Future[Any]:
        if self._call is None:  # joblib calls start_call first; a backend used by hand may not
            self.start_call()
        assert self._call is not None
        future = self._call.submit(func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, out: Future[Any]) -> Any:
        return out.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        if self._call is not None:
            self._call.abort()

    def terminate(self) -> None:
        self._end_call()

    def get_nested_backend(self) -> tuple[ParallelBackendBase, int | None]:
        # A Parallel call inside a job (an estimator's n_jobs=-1) uses that job's machine like a top-level
        # call: joblib's own process backend there (hfremote is not installed in the job).
        return LokyBackend(nesting_level=0), None

    def _end_call(self) -> None:
        call, self._call = self._call, None
        if call is not None:
            call.close()

    def __repr__(self) -> str:
        return f"<HFRemoteBackend flavor={self.options.flavor} n_jobs={self._n_jobs}>"


# What joblib.Parallel passes to `configure` of every backend (see Parallel.__init__).
_JOBLIB_SETTINGS = frozenset({"max_nbytes", "temp_folder", "mmap_mode", "prefer", "require", "verbose", "context"})


def _checked(base: Options | None, options: dict[str, Any]) -> Options:
    """remote() options for joblib's jobs, checked now: a wrong one is an OptionsError before any job."""
    checked = build(base, **options)
    if checked.detach:
        raise OptionsError(
            "detach=True does not apply to the joblib backend: a Parallel call waits for its results, and its "
            "jobs are cancelled when it fails or is interrupted"
        )
    # The client (huggingface_hub, the engine) is imported when a backend is made, not with hfremote.joblib.
    from ._config import current_hub

    current_hub().check_flavor(checked.flavor)
    return checked


class _Call:
    """One Parallel call: its run, its queued batches, its jobs (at most `n_jobs` at once)."""

    def __init__(self, run: Run, n_jobs: int, tasks: int | None) -> None:
        self.run, self.n_jobs = run, n_jobs
        self._lock = threading.RLock()
        self._pending: collections.deque[tuple[Any, Future[Any]]] = collections.deque()
        self._jobs: set[RemoteFuture[Any]] = set()
        self._active = 0  # batches being launched or with a job not yet finished
        self._next_index = 0
        self._aborted = self._closed = False
        self._launchers = concurrent.futures.ThreadPoolExecutor(_LAUNCHERS, thread_name_prefix="hfremote-joblib")
        self._completer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hfremote-joblib-done")
        self._progress = _Progress(run, tasks)

    def submit(self, batch: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                future.cancel()  # (joblib has not added its callback yet: it runs in joblib's thread)
                return future
            if self._aborted:  # joblib may not know yet: its failure is on its way, to arrive first
                self._hand_over(future, None, concurrent.futures.CancelledError(), len(batch))
                return future
            self._pending.append((batch, future))
            self._pump()
        return future

    def _pump(self) -> None:
        """Start launching queued batches while fewer than n_jobs have a job (caller holds the lock)."""
        while self._pending and self._active < self.n_jobs and not self._aborted:
            batch, future = self._pending.popleft()
            index = self._next_index
            self._next_index += 1
            self._active += 1
            self._launchers.submit(self._launch, batch, future, index)

    def _launch(self, batch: Any, future: Future[Any], index: int) -> None:
        from ._function import launch_one

        try:
            if self._aborted:
                raise concurrent.futures.CancelledError()
            call = _pack(self.run, batch)
            self.run.code_files.update(_code_files(self.run, batch))  # shared by the run's futures
            job = launch_one(self.run, call, index)
        except BaseException as e:  # whatever happens, the batch's future ends (joblib waits on it)
            self._ended(future, None, e, len(batch))
            return
        with self._lock:
            self._jobs.add(job)
            aborted = self._aborted
        self._progress.started()
        if aborted:  # aborted while its job was being created
            job.cancel()
        job.add_done_callback(lambda done: self._job_done(done, future, len(batch)))

    def _job_done(self, job: Future[Any], future: Future[Any], size: int) -> None:
        error = concurrent.futures.CancelledError() if job.cancelled() else job.exception()
        self._ended(future, job, error, size)

    def _ended(self, future: Future[Any], job: Future[Any] | None, error: BaseException | None, size: int) -> None:
        """A batch has its outcome (on an engine or launcher thread)."""
        failed = error is not None and not isinstance(error, concurrent.futures.CancelledError)
        with self._lock:
            self._active -= 1
            if job is not None:
                self._jobs.discard(job)
            # joblib ends the call at its first failed batch: no queued batch is launched from now on, and
            # the other jobs are cancelled now (even if the caller is slow to read a generator's output).
            # The failure is handed over before anything can see `_aborted`: under the lock.
            self._aborted = self._aborted or failed
            self._hand_over(future, job, error, size)
        if failed:
            self.abort()
        with self._lock:
            if not self._closed:
                self._pump()

    def _hand_over(self, future: Future[Any], job: Future[Any] | None, error: BaseException | None, size: int) -> None:
        """Complete a batch's future on the completer thread, in the order the outcomes came (the caller holds
        the lock): joblib's callback (and the caller's task generator behind it) never runs on the engine's
        threads, and a failure reaches joblib before the cancellations it causes (else joblib would raise
        CancelledError, not the failure)."""
        with contextlib.suppress(RuntimeError):  # the call has been closed: nobody waits for its batches
            self._completer.submit(_settle, future, job, error, self._progress, size)

    def abort(self) -> None:
        """Drop the queued batches and cancel every job of the call (nothing is left running, or billing)."""
        with self._lock:
            self._aborted = True
            for batch, future in self._pending:
                self._hand_over(future, None, concurrent.futures.CancelledError(), len(batch))
            self._pending.clear()
            jobs = list(self._jobs)
        for job in jobs:
            job.cancel()

    def close(self) -> None:
        """The Parallel call is over: nothing of it may go on (a batch still queued or running is cancelled)."""
        with self._lock:
            unfinished = bool(self._pending or self._active)
        if unfinished:
            self.abort()
        with self._lock:
            self._closed = True
        self._launchers.shutdown(wait=True)  # a launch under way ends, and cancels its job (see _launch)
        self._completer.shutdown(wait=False)
        self._progress.close(cancelled=unfinished or self._aborted)


def _pack(run: Run, batch: Any) -> PackedCall:
    """The batch as the trampoline's one argument; one that cannot travel fails as that batch."""
    try:
        return run.packer.pack((batch,), {})
    except PicklingError as e:  # said of the batch's tasks, not of the trampoline's argument
        reason = str(e).split("(): ", 1)[1] if str(e).startswith("argument 'batch' of") else str(e)
        raise PicklingError(f"a task of this joblib call cannot travel to its job: {reason}") from e.__cause__


def _code_files(run: Run, batch: Any) -> dict[str, str]:
    """The files of the caller's functions a batch runs (its tasks travel by value when they are the caller's
    own): their frames in a remote traceback then point at those files, as for a call."""
    from ._packing import Scan

    try:
        return Scan(batch, run.options.ship, run.options.pin).code_files
    except Exception:  # a courtesy to the traceback: never in the way of the batch
        return {}


# The frames a failed task's remote traceback starts with that are the trampoline's and joblib's, not the task's.
_BATCH_FRAMES = re.compile(
    r'^( *)File "[^"\n]*", line \d+, in call_batch\n(?:\1 .*\n)*'
    r'|^( *)File "[^"\n]*joblib[/\\]parallel\.py", line \d+, in (?:__call__|<listcomp>)\n(?:\2 .*\n)*',
    re.MULTILINE,
)


def _without_batch_frames(error: BaseException) -> BaseException:
    cause = error.__cause__
    if isinstance(cause, RemoteTraceback):
        error.__cause__ = RemoteTraceback(_BATCH_FRAMES.sub("", cause.text))
    return error


def _settle(
    future: Future[Any], job: Future[Any] | None, error: BaseException | None, progress: _Progress, size: int
) -> None:
    """Complete a batch's future from its job's (joblib's callback runs now, on this thread)."""
    try:
        if isinstance(error, concurrent.futures.CancelledError):
            future.cancel()
        elif error is not None:
            future.set_exception(_without_batch_frames(error))
        else:
            assert job is not None
            future.set_result(job.result())
    except concurrent.futures.InvalidStateError:
        pass
    except BaseException as e:  # joblib waits on this future: it must end, whatever went wrong here
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            future.set_exception(e)
    try:
        progress.done(size, error, job)
    except Exception as e:  # the progress line is a courtesy
        log.debug("hfremote: joblib progress: %s", e)


class _Progress:
    """The call's progress line: a bar on a terminal or in a notebook; elsewhere one line at the start and
    one at the end."""

    def __init__(self, run: Run, tasks: int | None) -> None:
        self.run = run
        self._lock = threading.Lock()
        self._done = self._failed = self._cancelled = self._running = 0
        self._jobs = 0
        self._cost = 0.0
        self._started = time.monotonic()
        self._bar: Any = None
        if progress_default():
            self._bar = progress_bar(total=tasks, desc=f"joblib {run.run_id}", unit="task", leave=True)
        else:
            print(f"hfremote: joblib tasks run as {run.options.flavor} jobs of run {run.run_id}", file=sys.stderr)

    def started(self) -> None:
        with self._lock:
            self._jobs += 1
            self._running += 1
            self._refresh()

    def done(self, size: int, error: BaseException | None, job: Future[Any] | None) -> None:
        # a finished job's cost needs no request (the price list is cached); a cancelled one's would
        cost = getattr(job, "cost", None) if job is not None and not job.cancelled() else None
        with self._lock:
            self._cost += cost or 0.0
            self._running -= 1 if job is not None else 0
            if error is None:
                self._done += size
            elif isinstance(error, concurrent.futures.CancelledError):
                self._cancelled += size
            else:
                self._failed += size
            self._refresh()

    def _refresh(self) -> None:
        if self._bar is None:
            return
        self._bar.n = self._done
        self._bar.set_postfix_str(
            f"running={self._running} failed={self._failed} cost={format_cost(self._cost)}", refresh=False
        )
        self._bar.refresh()

    def close(self, cancelled: bool) -> None:
        with self._lock:
            if self._bar is not None:
                self._refresh()
                self._bar.close()
                return
            took = time.monotonic() - self._started
            failed = f", {self._failed} failed" if self._failed else ""
            ended = ", the rest cancelled" if cancelled or self._cancelled else ""
            print(
                f"hfremote: joblib run {self.run.run_id}: {self._done} tasks done{failed}{ended}; {self._jobs} "
                f"jobs, {took:.0f}s, cost {format_cost(self._cost)}",
                file=sys.stderr,
            )


def register() -> None:
    """Make `backend="hfremote"` known to joblib (done when `hfremote.joblib` is imported)."""
    _parallel.register_parallel_backend(NAME, HFRemoteBackend)
