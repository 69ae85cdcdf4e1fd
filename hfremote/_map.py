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
import itertools
import sys
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import Any

from huggingface_hub import JobInfo

from ._future import TERMINAL, ChunkFuture, local_lines, watch
from ._options import Options
from ._packing import pack_calls
from .errors import OptionsError, RemoteTraceback

LOG_MODES = ("errors", "all", "none")
_CREATE_THREADS = 8


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


class MapRun:
    """One map: launches chunks as slots free up and yields results. Iterate it once."""

    def __init__(
        self,
        prepared: Any,  # a _function.Prepared: packed function, options, the platform
        calls: Iterator[tuple[tuple[Any, ...], dict[str, Any]]],
        settings: MapSettings,
        total: int | None,
    ) -> None:
        self.prepared, self.calls, self.total = prepared, calls, total
        chunksize, max_parallel = self.chunksize, self.max_parallel = settings.chunksize, settings.max_parallel
        self.ordered, self.return_exceptions = settings.ordered, settings.return_exceptions
        self.retries, self.logs, self.max_cost_usd = settings.retries, settings.logs, settings.max_cost_usd
        options: Options = prepared.options
        self._price = prepared.hub.hardware()[options.flavor]["price_per_minute"]
        self._job_worst = options.timeout / 60 * self._price * options.attempts
        if total is not None:  # a sized input: its whole worst case is refused before any job
            cost = estimate(self._price, options, total, chunksize, self.retries)
            self._refuse_over(cost.worst_case_usd, f" ({cost})")
        # Chunks uploaded ahead of their jobs: enough to fill every slot, about 4096 inputs at most beyond that.
        self._window = max(max_parallel, min(2 * max_parallel, -(-4096 // chunksize)), 1)
        self._counter = itertools.count()
        self._next_index = 0
        self._exhausted = False
        self._uploaded: list[tuple[str, list[tuple[int, bytes]]]] = []  # chunks uploaded, no job yet
        self._running: dict[ChunkFuture, list[tuple[int, bytes]]] = {}
        self._retry: list[tuple[int, bytes]] = []
        self._tries: dict[int, int] = {}
        self._done: dict[int, tuple[bool, Any]] = {}  # finished, not yet yielded
        self._error: BaseException | None = None  # the failure that ends the map (without return_exceptions)
        self._next_yield = 0
        self._jobs = self._failed = self._finished = 0
        self._cost_done = 0.0
        self._bar: Any = None
        self._progress = settings.progress if settings.progress is not None else sys.stderr.isatty()
        self._log_threads: list[threading.Thread] = []

    # -- the loop --------------------------------------------------------------------------------
    def __iter__(self) -> Generator[Any, None, None]:
        self._open_bar()
        try:
            while True:
                self._launch()
                yield from self._ready()
                if not self._running and not self._uploaded and not self._retry and self._exhausted:
                    break
                self._collect()
                yield from self._ready()
                if self._error is not None:  # after the results that come before it
                    raise self._error
            deadline = time.monotonic() + 10.0  # every job has ended: print their last followed lines first
            for thread in self._log_threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        except KeyboardInterrupt:
            count = self._cancel_all()
            print(f"\nhfremote: map interrupted; cancelled {count} unfinished job(s)", file=sys.stderr)
            raise
        except GeneratorExit:
            self._cancel_all()  # the caller stopped iterating: stop paying for what it will not read
            raise
        except BaseException:
            self._cancel_all()
            raise
        finally:
            self._close_bar()

    def _ready(self) -> Iterator[Any]:
        if self.ordered:
            while self._next_yield in self._done:
                yield self._emit(self._done.pop(self._next_yield))
                self._next_yield += 1
        else:
            while self._done:
                self._next_yield += 1  # unordered: a count of the values yielded (what `ahead` subtracts)
                yield self._emit(self._done.pop(next(iter(self._done))))

    def _emit(self, outcome: tuple[bool, Any]) -> Any:
        return outcome[1]  # failures only get here with return_exceptions: the others raised in _collect

    # -- launching -------------------------------------------------------------------------------
    def _take_inputs(self, count: int) -> list[tuple[int, bytes]]:
        """Up to `count` inputs from the caller's iterator, packed; an error in the iterator stops the map."""
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        while len(calls) < count and not self._exhausted:
            try:
                calls.append(next(self.calls))
            except StopIteration:
                self._exhausted = True
        first, self._next_index = self._next_index, self._next_index + len(calls)
        return list(zip(itertools.count(first), pack_calls(self.prepared.fn, calls), strict=False))

    def _launch(self) -> None:
        # Results may not run too far ahead of the one awaited next (ordered), so memory stays flat.
        ahead = self._next_index - self._next_yield
        room = self.max_parallel - len(self._running)
        if room <= 0:
            return
        # Retries were read already: they go whatever `ahead` is (or a failed input awaited next would stall).
        read_more = not self._exhausted and ahead < self._window * self.chunksize * 2
        if not self._uploaded and (self._retry or read_more):
            chunks: list[list[tuple[int, bytes]]] = []
            while self._retry and len(chunks) < self._window:
                chunks.append(self._retry[: self.chunksize])
                del self._retry[: self.chunksize]
            if read_more:
                taken = self._take_inputs((self._window - len(chunks)) * self.chunksize)
                chunks += [taken[i : i + self.chunksize] for i in range(0, len(taken), self.chunksize)]
            named = [(str(next(self._counter)), calls) for calls in chunks if calls]
            if named:
                self._check_cost(len(named))
                self.prepared.upload(dict(named))
                self._uploaded.extend(named)
        batch, self._uploaded = self._uploaded[:room], self._uploaded[room:]
        if batch:
            pool = ThreadPoolExecutor(min(_CREATE_THREADS, len(batch)), thread_name_prefix="hfremote-create")
            creations = [pool.submit(self.prepared.create, chunk) for chunk, _ in batch]
            pool.shutdown(wait=False)
            try:
                wait_futures(creations)  # (a thread's join() that Ctrl-C interrupts may not be waited on again)
            except BaseException:  # Ctrl-C: the jobs being created will exist; track them so they get cancelled
                with contextlib.suppress(BaseException):
                    wait_futures(creations)
                self._track(batch, creations)
                raise
            self._track(batch, creations)
            failures = [error for c in creations if c.done() and (error := c.exception()) is not None]
            if failures:  # the jobs that were created are tracked, so the map's clean-up cancels them
                raise failures[0]
            self._refresh_bar()

    def _track(self, batch: list[tuple[str, list[tuple[int, bytes]]]], creations: list[Future[JobInfo]]) -> None:
        """Watch the jobs that were created."""
        for (chunk, calls), creation in zip(batch, creations, strict=True):
            if not creation.done() or creation.exception() is not None:
                continue
            info = creation.result()
            future = ChunkFuture(
                self.prepared.hub,
                self.prepared.namespace,
                info,
                self.prepared.run_id,
                chunk,
                self.prepared.name,
                [index for index, _ in calls],
            )
            future.code_files = self.prepared.code_files
            watch(future)
            self._running[future] = calls
            self._jobs += 1
            if self.logs == "all":
                self._follow_logs(future)

    def _check_cost(self, new_jobs: int) -> None:
        self._refuse_over((self._jobs + len(self._uploaded) + new_jobs) * self._job_worst, " (jobs x timeout x price)")

    def _refuse_over(self, worst: float, how: str) -> None:
        if self.max_cost_usd is not None and worst > self.max_cost_usd:
            raise OptionsError(
                f"this map could cost up to ${worst:.2f}{how}, over max_cost_usd={self.max_cost_usd}; "
                "raise the limit, lower the timeout or use a larger chunksize"
            )

    # -- collecting ------------------------------------------------------------------------------
    def _collect(self) -> None:
        finished, _ = wait_futures(list(self._running), timeout=0.5, return_when=FIRST_COMPLETED)
        self._refresh_bar()
        done = [f for f in self._running if f in finished]  # typed as ChunkFutures, in launch order
        failures: dict[int, BaseException] = {}
        for future in done:
            calls = self._running.pop(future)
            self._cost_done += future.cost or 0.0
            exc = future.exception()
            outcomes: dict[int, tuple[bool, Any]] = (
                {index: (False, exc) for index, _ in calls} if exc is not None else future.result()
            )
            by_index = dict(calls)
            for index, (ok, value) in sorted(outcomes.items()):
                if index not in by_index:
                    continue
                if not ok and self._tries.get(index, 0) < self.retries:
                    self._tries[index] = self._tries.get(index, 0) + 1
                    self._retry.append((index, by_index[index]))
                    continue
                self._tries.pop(index, None)
                self._finished += 1
                if not ok:
                    self._failed += 1
                    if self.logs != "none":
                        self._print_failure(index, future, value)
                    if not self.return_exceptions:
                        failures.setdefault(index, value)
                        continue
                self._done[index] = (ok, value)
        if failures:  # money first: stop every job now; what finished before the failure is still yielded
            self._cancel_all()
            self._error = failures[min(failures)]
        self._refresh_bar()

    def _cancel_all(self) -> int:
        unfinished = [f for f in self._running if not f.done()]
        self._running.clear()
        self._uploaded.clear()
        if unfinished:
            with ThreadPoolExecutor(min(_CREATE_THREADS, len(unfinished))) as pool:
                list(pool.map(lambda f: f.cancel(), unfinished))
        return len(unfinished)

    # -- observability ---------------------------------------------------------------------------
    def _print_failure(self, index: int, future: ChunkFuture, error: BaseException) -> None:
        lines = getattr(error, "log_tail", None)
        cause = error.__cause__
        if lines is None and len(future.indexes) > 1 and isinstance(cause, RemoteTraceback):
            lines = cause.text.splitlines()  # the job's log mixes the chunk's inputs: this one's own traceback
        if lines is None:
            try:
                lines = future.log_tail(20)
            except Exception:  # the log tail is a courtesy: the failure itself is raised or returned
                lines = []
        header = f"[input {index}] failed ({type(error).__name__}: {error}); job {future.job_id}"
        lines = list(local_lines(lines, future.code_files))
        print("\n".join([header, *(f"[input {index}] {line}" for line in lines)]), file=sys.stderr)

    def _follow_logs(self, future: ChunkFuture) -> None:
        first, last = future.indexes[0], future.indexes[-1]
        prefix = f"[input {first}] " if first == last else f"[inputs {first}-{last}] "

        def follow() -> None:
            try:
                for line in local_lines(future.logs(follow=True), future.code_files):
                    print(prefix + line, file=sys.stderr, flush=True)
            except Exception:  # log streaming is a courtesy: it must never break the map
                return

        thread = threading.Thread(target=follow, name=f"hfremote-logs-{future.job_id}", daemon=True)
        thread.start()
        self._log_threads.append(thread)

    def _open_bar(self) -> None:
        if not self._progress:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(total=self.total, desc=self.prepared.name, unit="input", file=sys.stderr, leave=True)

    def _refresh_bar(self) -> None:
        if self._bar is None:
            return
        stages = [f.info.status.stage for f in self._running]
        running = sum(1 for stage in stages if stage == "RUNNING")
        queued = sum(1 for stage in stages if stage not in TERMINAL and stage != "RUNNING")
        cost = self._cost_done + sum(f.cost or 0.0 for f in self._running)
        self._bar.n = self._finished
        self._bar.set_postfix_str(
            f"running={running} queued={queued} failed={self._failed} cost=${cost:.4f}", refresh=False
        )
        self._bar.refresh()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._refresh_bar()
            self._bar.close()


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
