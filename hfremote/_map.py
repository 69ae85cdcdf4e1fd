"""Fan-out: one function over many inputs, as many jobs (or chunks of inputs per job).

    inputs ──(lazily, a window at a time)──► chunks of `chunksize` ──► one upload per window
        ──► a job per chunk, at most `max_parallel` unfinished ──► the watcher (one list per tick)
        ──► each chunk's result file ──► per-input outcomes ──► retries of failed inputs
        ──► values yielded in input order (or as they complete)

Memory stays flat: inputs are read only as far as the window needs, and results wait for their turn
only within the window. A failure (after `retries`) cancels every unfinished job of the map at once,
yields the results before it that had finished (in input order when ordered) and raises the
function's own exception, unless `return_exceptions`.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, InvalidStateError, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import Any, TypeVar

from huggingface_hub import JobInfo

from ._calls import PackedCall
from ._console import (
    Console,
    format_cost,
    mark,
    neutralise,
    progress_bar,
    progress_default,
    raw_output,
    without_last_traceback,
)
from ._engine import TERMINAL, engine
from ._future import ChunkFuture, local_lines, watch
from ._mapbook import Chunk, MapBook
from ._options import Options, check_map_options
from ._remote_run import first_job, read_run
from ._run import FUNCTION_LABEL, Run
from .errors import BackendError, JobFailedError, OptionsError, RemoteTraceback

R = TypeVar("R")

LOG_MODES = ("errors", "all", "none")
_CREATE_THREADS = 8


class _Stopped(BaseException):
    """The map was asked to stop (`MapRun.stop`): raised in the thread that iterates it."""


@dataclass(frozen=True)
class CostEstimate:
    """What a map may cost at worst: every job running until its timeout, every try of it, every retry."""

    jobs: int  # the map's jobs, before any retry
    flavor: str
    price_per_hour: float
    timeout_seconds: int
    retries: int = 0  # rounds of the map's retries of failed inputs: each runs at most `jobs` more jobs
    attempts: int = 1  # the platform's tries of each job

    @property
    def worst_case_usd(self) -> float:
        runs = self.jobs * (1 + self.retries) * self.attempts
        return round(runs * self.timeout_seconds / 3600 * self.price_per_hour, 4)

    def __str__(self) -> str:
        more = f" (+ up to {self.jobs * self.retries} for retries)" if self.retries else ""
        tries = f", {self.attempts} attempts each" if self.attempts > 1 else ""
        return (
            f"{self.jobs} jobs{more} on {self.flavor} at ${self.price_per_hour:.2f}/h, at most "
            f"{self.timeout_seconds}s each{tries}: at most ${self.worst_case_usd:.2f}"
        )


def estimate(price_per_minute: float, options: Options, inputs: int, chunksize: int, retries: int) -> CostEstimate:
    jobs = -(-inputs // chunksize)
    return CostEstimate(jobs, options.flavor, price_per_minute * 60, options.timeout, retries, options.attempts)


@dataclass(frozen=True)
class MapSettings:
    """How a map runs (the keyword arguments of `map` and `starmap`), checked when made."""

    chunksize: int = 1
    max_parallel: int = 16
    ordered: bool = True
    return_exceptions: bool = False
    retries: int = 0
    progress: bool | None = None
    logs: str = "errors"
    max_cost_usd: float | None = None

    def __post_init__(self) -> None:
        for name, low in (("chunksize", 1), ("max_parallel", 1), ("retries", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise OptionsError(f"{name}={value!r} must be an integer >= {low}")
        if self.logs not in LOG_MODES:
            raise OptionsError(f"logs={self.logs!r}: use one of {', '.join(LOG_MODES)}")
        check_map_options(self.ordered, self.return_exceptions, self.progress, self.max_cost_usd)


class MapRun:
    """One map: launches chunks as slots free up and yields results. Iterate it once."""

    def __init__(
        self,
        run: Run,
        calls: Iterator[tuple[tuple[Any, ...], dict[str, Any]]],
        settings: MapSettings,
        total: int | None,
        resume: bool = False,
    ) -> None:
        self.run, self.calls, self.total, self.resume = run, calls, total, resume
        self.settings = settings
        self.book = MapBook(
            settings.chunksize, settings.max_parallel, settings.ordered, settings.return_exceptions, settings.retries
        )
        self.logs, self.max_cost_usd = settings.logs, settings.max_cost_usd
        options = run.options
        self._price = run.hub.hardware()[options.flavor]["price_per_minute"]
        self._job_worst = options.timeout / 60 * self._price * options.attempts
        if total is not None and not resume:  # a sized input: its whole worst case is refused before any job
            cost = estimate(self._price, options, total, settings.chunksize, settings.retries)
            self._refuse_over(cost.worst_case_usd, f" ({cost})")
        self._queued: list[Chunk] = []  # chunks uploaded, no job yet
        self._running: dict[ChunkFuture, dict[int, PackedCall | None]] = {}
        self._covered: dict[int, tuple[bool, Any] | None] = {}  # resumed: a result, or None (a job runs it)
        self._adopted: dict[int, ChunkFuture] = {}
        self._creating: list[Future[JobInfo]] = []  # resumed: the earlier process's job running each input
        self._jobs = 0
        self._cost_done = 0.0
        self._bar: Any = None
        self._progress = settings.progress if settings.progress is not None else progress_default()
        self._log_threads: list[threading.Thread] = []
        self._console = Console()  # the followed jobs' lines (logs="all"), on stdout
        self._release_lease: Callable[[], None] | None = None
        self._stopping: Future[None] = Future()  # set by stop(), from another thread

    # -- the loop --------------------------------------------------------------------------------
    def __iter__(self) -> Generator[Any, None, None]:
        book = self.book
        self._open_bar()
        if self.logs != "none":
            how = "resumed" if self.resume else "started"
            print(f"hfremote: map of {self.run.name} {how}: run {self.run.run_id}", file=sys.stderr)
        try:
            if self.resume:
                self._adopt()
            if self.run.lease_ttl is not None:  # renewed at once when resuming: the old client's may be stale
                self._release_lease = engine().hold_lease(
                    self.run.hub, self.run.bucket, self.run.layout.lease, self.run.lease_ttl, now=self.resume
                )
            while True:
                if self._stopping.done():
                    raise _Stopped
                self._launch()
                yield from book.ready()
                if book.over(len(self._running), len(self._queued)):
                    break
                self._collect()
                if self._stopping.done():
                    raise _Stopped
                yield from book.ready()
                if book.error is not None:  # after the results that come before it
                    raise mark(book.error, "failure")
            deadline = time.monotonic() + 10.0  # every job has ended: print their last followed lines first
            for thread in self._log_threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        except (KeyboardInterrupt, _Stopped) as interrupt:
            if self.run.options.detach:
                print(
                    f"\nhfremote: map interrupted; detached: its {len(self._running)} job(s) keep running. "
                    f"Attach with hfremote.RemoteRun.attach({self.run.run_id!r})",
                    file=sys.stderr,
                )
                raise mark(interrupt, "interrupt") from None
            count = self._cancel_all()
            print(f"\nhfremote: map interrupted; cancelled {count} unfinished job(s)", file=sys.stderr)
            raise mark(interrupt, "interrupt") from None
        except BackendError as error:  # the platform, not an input: what finished is kept, the map can go on
            self._cancel_all()
            if f"{self.run.run_id!r}" in str(error):
                raise
            raise BackendError(
                f"{error}. The inputs that finished are kept in run {self.run.run_id}: once the platform answers, "
                f"run the rest with .map(<the same inputs>, resume={self.run.run_id!r})"
            ) from error
        except BaseException:  # a failure, or the caller stopped iterating: stop paying for what it will not read
            if not (self._stopping.done() and self.run.options.detach):
                self._cancel_all()
            raise
        finally:
            if self._release_lease is not None:
                self._release_lease()
            self._close_bar()

    def stop(self) -> None:
        """End the map at its next step, from any thread, as Ctrl-C would: its unfinished jobs are cancelled,
        unless the run is detached (the awaiting task of an async map was cancelled)."""
        with contextlib.suppress(InvalidStateError):
            self._stopping.set_result(None)

    # -- resuming --------------------------------------------------------------------------------
    def _adopt(self) -> None:
        """Take over what an earlier process left of this run: results, and jobs still running."""
        run = self.run
        state = read_run(run.hub, run.namespace, run.run_id, run.code_files)
        mine = run.labels("")[FUNCTION_LABEL].rsplit("-", 1)[-1]
        theirs = {(j.labels or {}).get(FUNCTION_LABEL, "").rsplit("-", 1)[-1] for j in state.jobs} - {"", mine}
        if theirs:
            raise OptionsError(
                f"resume={run.run_id!r} is a run of {', '.join(sorted(theirs))}, not of {mine}: "
                "resume a run with the function that started it"
            )
        # This process is the run's client now: its lease is written at once (fresh, or marked detached when
        # this map is), even if every chunk left still runs and nothing else is uploaded; renewed as often as
        # the running jobs expect (they read its ttl when they started).
        if run.lease_ttl is not None and state.lease_ttl is not None:
            run.lease_ttl = min(run.lease_ttl, state.lease_ttl)
        run.write_lease()
        self.book.taken.update(state.launched)  # a chunk uploaded but never run is uploaded and run again
        for index, outcome in state.outcomes.items():
            self._covered[index] = outcome
        for future in state.running:
            future.code_files = self.run.code_files
            watch(future)
            self._running[future] = dict.fromkeys(future.indexes)  # packed calls filled in as they are read
            for index in future.indexes:
                self._covered.setdefault(index, None)
                self._adopted[index] = future
            self._jobs += 1

    # -- launching -------------------------------------------------------------------------------
    def _take_inputs(self, count: int) -> list[tuple[int, PackedCall]]:
        """Up to `count` inputs from the caller's iterator, packed as read and bounded in bytes; an error in
        the iterator stops the map."""
        packed, exhausted = self.run.packer.take(self.calls, count)
        self.book.exhausted = self.book.exhausted or exhausted
        taken = list(zip(self.book.read(len(packed)), packed, strict=True))
        if not self._covered:
            return taken
        fresh = []  # resumed: inputs with a result, or a job of the earlier process, are not run again
        for index, call in taken:
            if index not in self._covered:
                fresh.append((index, call))
                continue
            known = self._covered.pop(index)
            if known is not None:
                self.book.record({index: None}, {index: known})
            elif self._adopted.get(index) in self._running:  # an adopted job's input: it can be retried now
                self._running[self._adopted.pop(index)][index] = call
        return fresh

    def _launch(self) -> None:
        book = self.book
        room = book.max_parallel - len(self._running)
        if room <= 0:
            return
        if not self._queued:
            chunks = book.take_retries(book.window)
            want = book.to_read()
            if want and len(chunks) < book.window:
                chunks += book.cut(self._take_inputs(want - len(chunks) * book.chunksize))
            if chunks:
                self._check_cost(len(chunks))
                self.run.upload({chunk.name: chunk.calls for chunk in chunks})
                self._queued.extend(chunks)
        batch, self._queued = self._queued[:room], self._queued[room:]
        if batch:
            pool = ThreadPoolExecutor(min(_CREATE_THREADS, len(batch)), thread_name_prefix="hfremote-create")
            create = self._create_once if self.resume else self.run.create
            creations = [pool.submit(create, chunk.name) for chunk in batch]
            self._creating = creations  # until tracked: a Ctrl-C in between must still find these jobs
            pool.shutdown(wait=False)
            try:
                wait_futures(creations)  # (a thread's join() that Ctrl-C interrupts may not be waited on again)
            except BaseException:  # Ctrl-C: the jobs being created will exist; track them so they get cancelled
                with contextlib.suppress(BaseException):
                    wait_futures(creations)
                self._track(batch, creations)
                raise
            self._track(batch, creations)
            self._creating = []
            failures = [error for c in creations if c.done() and (error := c.exception()) is not None]
            if failures:  # the jobs that were created are tracked, so the map's clean-up cancels them
                error = failures[0]
                if isinstance(error, BackendError):  # the platform, not the input: the run can go on later
                    raise BackendError(
                        f"{error}. The inputs that finished are kept in run {self.run.run_id}: once the platform "
                        f"answers, run the rest with .map(<the same inputs>, resume={self.run.run_id!r})"
                    ) from error
                raise error
            self._refresh_bar()

    def _create_once(self, chunk: str) -> JobInfo:
        """Create a resumed run's job, keeping the chunk's oldest one if another process resuming the same
        run made one too (the platform has no idempotency key: the two agree on the oldest afterwards)."""
        run = self.run
        return first_job(run.hub, run.namespace, run.run_id, chunk, run.create(chunk))

    def _track(self, batch: list[Chunk], creations: list[Future[JobInfo]]) -> None:
        """Watch the jobs that were created."""
        for chunk, creation in zip(batch, creations, strict=True):
            if not creation.done() or creation.exception() is not None:
                continue
            run = self.run
            future = ChunkFuture(
                run.hub, run.namespace, creation.result(), run.run_id, chunk.name, run.name, chunk.indexes, run.layout
            )
            future.code_files = run.code_files
            watch(future)
            self._running[future] = dict(chunk.calls)
            self._jobs += 1
            if self.logs == "all":
                self._follow_logs(future)

    def _check_cost(self, new_jobs: int) -> None:
        self._refuse_over((self._jobs + len(self._queued) + new_jobs) * self._job_worst, " (jobs x timeout x price)")

    def _refuse_over(self, worst: float, how: str) -> None:
        if self.max_cost_usd is not None and worst > self.max_cost_usd:
            raise OptionsError(
                f"this map could cost up to ${worst:.2f}{how}, over max_cost_usd={self.max_cost_usd}; "
                "raise the limit, lower the timeout or use a larger chunksize"
            )

    # -- collecting ------------------------------------------------------------------------------
    def _collect(self) -> None:
        waited: list[Future[Any]] = [*self._running, self._stopping] if self._running else []  # stop() ends it
        finished, _ = wait_futures(waited, timeout=0.5, return_when=FIRST_COMPLETED)
        self._refresh_bar()
        for future in [f for f in self._running if f in finished]:  # in launch order
            calls = self._running.pop(future)
            self._cost_done += future.cost or 0.0
            exc = future.exception()
            outcomes: dict[int, tuple[bool, Any]] = (
                dict.fromkeys(calls, (False, exc)) if exc is not None else future.result()
            )
            for index, error in self.book.record(calls, outcomes):
                if self.logs != "none":  # the error the map raises shows its traceback or log tail itself
                    self._print_failure(index, future, error, brief=error is self.book.error)
        if self.book.error is not None:  # money first: stop every job now; what finished before is still yielded
            self._cancel_all()
        self._refresh_bar()

    def _cancel_all(self) -> int:
        """Cancel every unfinished job of the map; a failing cancel never hides the error being raised."""
        unfinished = [f for f in self._running if not f.done()]
        tracked = {f.job_id for f in self._running}
        untracked = [c.result() for c in self._creating if c.done() and not c.exception()]
        untracked = [info for info in untracked if info.id not in tracked]  # created, not yet watched
        self._running.clear()
        self._queued.clear()
        self._creating = []
        for future in unfinished:
            future.cancel()  # a local change; the requests are queued
        for info in untracked:
            engine().cancel_job(self.run.hub, self.run.namespace, info.id)
        engine().flush()
        return len(unfinished) + len(untracked)

    # -- observability ---------------------------------------------------------------------------
    def _print_failure(self, index: int, future: ChunkFuture, error: BaseException, brief: bool = False) -> None:
        """A failed input's last log lines; for the error the map raises (`brief`), which shows its own
        traceback or log tail, only the job and the lines before the traceback."""
        lines = getattr(error, "log_tail", None)
        cause = error.__cause__
        if brief and (lines is not None or len(future.indexes) > 1 or isinstance(error, BackendError)):
            lines = []  # everything there is to show is in the error itself
        if lines is None and len(future.indexes) > 1 and isinstance(cause, RemoteTraceback):
            lines = cause.text.splitlines()  # the job's log mixes the chunk's inputs: this one's own traceback
        if lines is None and isinstance(error, BackendError):
            lines = []  # the platform is not answering: asking it for the logs would only wait longer
        if lines is None:
            try:
                lines = future.log_tail(20, tries=2)
            except Exception:  # the log tail is a courtesy: the failure itself is raised or returned
                lines = []
            if brief and isinstance(cause, RemoteTraceback):
                lines = without_last_traceback(lines)
        if brief:
            header = f"[input {index}] failed ({type(error).__name__}); job {future.job_id} ({future.url})"
        else:
            what = f"ended {error.stage}" if isinstance(error, JobFailedError) else f"{type(error).__name__}: {error}"
            header = f"[input {index}] failed ({what}); job {future.job_id}"
        lines = [line if raw_output() else neutralise(line) for line in local_lines(lines, future.code_files)]
        print("\n".join([header, *(f"[input {index}] {line}" for line in lines)]), file=sys.stderr)

    def _follow_logs(self, future: ChunkFuture) -> None:
        first, last = future.indexes[0], future.indexes[-1]
        prefix = f"[input {first}] " if first == last else f"[inputs {first}-{last}] "

        def follow() -> None:
            try:
                for line in local_lines(future.logs(follow=True), future.code_files):
                    self._console.job_line(line, prefix)
            except Exception:  # log streaming is a courtesy: it must never break the map
                return

        thread = threading.Thread(target=follow, name=f"hfremote-logs-{future.job_id}", daemon=True)
        thread.start()
        self._log_threads.append(thread)

    def _open_bar(self) -> None:
        if not self._progress:
            return
        self._bar = progress_bar(total=self.total, desc=self.run.name, unit="input", leave=True)

    def _refresh_bar(self) -> None:
        if self._bar is None:
            return
        stages = [f.info.status.stage for f in self._running]
        running = sum(1 for stage in stages if stage == "RUNNING")
        queued = sum(1 for stage in stages if stage not in TERMINAL and stage != "RUNNING")
        cost = self._cost_done + sum(f.cost or 0.0 for f in self._running)
        self._bar.n = self.book.finished
        self._bar.set_postfix_str(
            f"running={running} queued={queued} failed={self.book.failed} cost={format_cost(cost)}", refresh=False
        )
        self._bar.refresh()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._refresh_bar()
            self._bar.close()


class MapResults(Iterator[R]):
    """What `map` returns: an iterator of the results, with the map's `run_id` (to attach or resume it)."""

    def __init__(self, run: MapRun) -> None:
        self.run_id = run.run.run_id
        self._map = run
        self._values = run.__iter__()

    def __iter__(self) -> MapResults[R]:
        return self

    def __next__(self) -> R:
        value: R = next(self._values)
        return value

    def close(self) -> None:
        """Stop the map: its unfinished jobs are cancelled."""
        self._values.close()

    def stop(self) -> None:
        """From another thread than the one iterating: end the map at its next step, as Ctrl-C would."""
        self._map.stop()

    def __repr__(self) -> str:
        return f"<MapResults run_id={self.run_id!r}>"


def calls_of(iterables: tuple[Iterable[Any], ...], star: bool) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    if star:
        (iterable,) = iterables
        return ((tuple(args), {}) for args in iterable)
    return ((tuple(args), {}) for args in zip(*iterables, strict=False))


def length_of(iterables: tuple[Iterable[Any], ...]) -> int | None:
    try:
        return min(len(it) for it in iterables)  # type: ignore[arg-type]
    except TypeError:
        return None
