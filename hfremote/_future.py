"""RemoteFuture, and the watcher thread that completes futures when their jobs end.

    submit ──► RemoteFuture (PENDING) ──► Watcher: one list request per tick per run (by label);
                                             │ the log streams of a few running jobs, which end with them
                                             │ a job reached a terminal stage
                                             ▼
                           download results/<call>.pkl from the run folder
                           value → set_result · user exception → set_exception(original type,
                           remote traceback as __cause__) · no result → JobFailedError

A future stays PENDING while its job runs, so `Future.cancel()` keeps its standard meaning; cancelling
it also cancels the job.
"""

from __future__ import annotations

import builtins
import concurrent.futures
import contextlib
import linecache
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import cloudpickle
from huggingface_hub import JobInfo

from ._config import current_hub, poll_interval
from ._entry import read_results
from ._hub import BUCKET, Hub
from .errors import BackendError, HFRemoteError, JobFailedError, RemoteTraceback

R = TypeVar("R")
log = logging.getLogger("hfremote")
TERMINAL = ("COMPLETED", "CANCELED", "ERROR", "DELETED")
ACTIVE = ("SCHEDULING", "RUNNING")
RUN_LABEL, CALL_LABEL, FUNCTION_LABEL = "hfremote-run", "hfremote-call", "hfremote-function"
_LOG_TAIL = 20
# Log streams held open at once, each ending when its job does: the watcher learns of those ends at
# once instead of at its next tick (seconds apart on the Hub). Polling still sees every end.
_MAX_END_STREAMS = 8


class RemoteError(HFRemoteError):
    """An exception raised in the job that could not be re-created here (its type and message are kept)."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name, self.message = type_name, message


class RemoteFuture(Future[R], Generic[R]):
    """The result of a function running as a job: a `concurrent.futures.Future` with the job attached."""

    def __init__(
        self, hub: Hub, namespace: str, info: JobInfo, run_id: str, call: str, name: str = "", index: int | None = None
    ) -> None:
        super().__init__()
        self._hub, self.namespace, self._info = hub, namespace, info
        self.run_id, self.call, self.name = run_id, call, name or info.id
        self.index = index  # the input this future stands for (None when re-attached: the job's only one)
        self._followed = False
        self.code_files: dict[str, str] = {}  # function name -> its file here, for the remote traceback
        self.folder = f"runs/{run_id}"  # the run folder in the bucket

    # -- the job ---------------------------------------------------------------------------------
    @property
    def job_id(self) -> str:
        return self._info.id

    @property
    def url(self) -> str:
        return self._info.url

    @property
    def info(self) -> JobInfo:
        """The job as last seen by the watcher (or as created)."""
        return self._info

    @property
    def stage(self) -> str:
        """The job's stage: SCHEDULING, RUNNING, COMPLETED, ERROR, CANCELED."""
        if self._info.status.stage not in TERMINAL:
            self._info = self._hub.inspect(self.namespace, self.job_id)
        return str(self._info.status.stage)

    def running(self) -> bool:
        return not self.done() and self._info.status.stage == "RUNNING"

    @property
    def cost(self) -> float | None:
        """Estimated cost in USD so far: the flavor's price per minute times the job's running time."""
        price = self._hub.hardware().get(self._info.flavor or "", {}).get("price_per_minute")
        if price is None:
            return None
        if self.cancelled() and self._info.status.stage not in TERMINAL:
            self._info = self._hub.inspect(self.namespace, self.job_id)  # the watcher no longer updates it
        info = self._info
        seconds: float = 0.0
        if info.started_at is not None:  # timestamps are finer than the whole seconds of `durations`
            end = info.finished_at.timestamp() if info.finished_at is not None else time.time()
            seconds = end - info.started_at.timestamp()
        elif info.durations is not None and info.durations.running_secs is not None:
            seconds = float(info.durations.running_secs)
        return round(float(price) * max(0.0, seconds) / 60.0, 6)

    def logs(self, follow: bool = False) -> Iterator[str]:
        """The job's log lines; with `follow`, until the job ends, each line exactly once.

        The stream is reopened when it drops or ends early: the platform replays the whole log on each
        connection, so lines already yielded are skipped by count. A last read after the job has ended
        picks up lines a closing stream could miss.
        """
        seen = 0
        if not follow:
            yield from self._all_logs()
            return
        self._followed = True  # the watcher need not open a stream of its own for this job's end
        failures = 0
        while True:
            index = 0
            try:
                for line in self._hub.log_stream(self.namespace, self.job_id, True):
                    index += 1
                    if index > seen:
                        seen = index
                        failures = 0
                        yield line
            except Exception as e:  # a dropped stream or an error status: look at the job, then go on
                failures += 1
                if failures > 8:
                    raise BackendError(f"could not read the logs of job {self.job_id}: {e}") from e
                time.sleep(min(0.2 * 2**failures, 5.0))
            if self.stage in TERMINAL:
                _watcher().look_now(self)  # the job has ended: complete the future now, not at the next tick
                break
        yield from self._all_logs()[seen:]

    def log_tail(self, lines: int) -> list[str]:
        """The job's last log lines, asked as a tail: the cost does not grow with the log."""
        return self._hub.call(
            "reading logs", lambda: list(self._hub.log_stream(self.namespace, self.job_id, False, tail=lines))
        )

    def _all_logs(self) -> list[str]:
        return self._hub.call("reading logs", lambda: list(self._hub.log_stream(self.namespace, self.job_id, False)))

    def metrics(self) -> dict[str, Any] | None:
        """One sample of the running job's metrics (CPU, memory, GPUs), or None once it has finished."""
        return self._hub.metrics(self.namespace, self.job_id)

    def cancel(self) -> bool:
        """Cancel the job (unless it has finished already)."""
        if not super().cancel():
            return False
        _watcher().forget(self)
        self._hub.cancel(self.namespace, self.job_id)
        return True

    # -- re-attach -------------------------------------------------------------------------------
    @classmethod
    def attach(cls, job_id: str, namespace: str | None = None) -> RemoteFuture[Any]:
        """The future of a job started earlier (by this or another process), e.g. after a crash."""
        hub = current_hub()
        ns = hub.namespace(namespace or (job_id.split("/")[0] if "/" in job_id else None))
        job_id = job_id.split("/")[-1]
        info = hub.inspect(ns, job_id)
        labels = info.labels or {}
        if RUN_LABEL not in labels or CALL_LABEL not in labels:
            raise HFRemoteError(f"job {job_id} was not started by hfremote (it has no {RUN_LABEL} label)")
        future: RemoteFuture[Any] = cls(hub, ns, info, labels[RUN_LABEL], labels[CALL_LABEL], labels.get("name", ""))
        _watcher().watch(future)
        return future

    def __repr__(self) -> str:
        return f"<RemoteFuture {self.name} job={self.job_id} stage={self._info.status.stage} state={self._state}>"

    # -- completion (watcher only) ---------------------------------------------------------------
    def _finish(self, info: JobInfo) -> None:
        self._info = info
        try:
            data = self._hub.download(f"{self.namespace}/{BUCKET}", self._result_path())
        except Exception as e:  # whatever happens, the future must end: nothing else will complete it
            error = e if isinstance(e, BackendError) else BackendError(f"reading the result of {self.job_id}: {e}")
            outcome: tuple[bool, Any] = (False, error)
        else:
            outcome = self._outcome(info, data)
        if not self.set_running_or_notify_cancel():
            return  # cancelled meanwhile
        ok, value = outcome
        if ok:
            self.set_result(value)
        else:
            self.set_exception(value)

    def _result_path(self) -> str:
        return f"{self.folder}/results/{self.call}.pkl"

    def _failure(self, info: JobInfo) -> JobFailedError:
        """What an input that got no result raises: the job's stage, message, URL and last log lines."""
        tail: list[str] = []
        with contextlib.suppress(HFRemoteError):  # the logs are a courtesy; the failure is what matters
            tail = self.log_tail(_LOG_TAIL)
        message = info.status.message or (
            "finished without writing its result" if info.status.stage == "COMPLETED" else None
        )
        return JobFailedError(self.job_id, str(info.status.stage), message, self.url, tail)

    def _outcome(self, info: JobInfo, data: bytes | None) -> tuple[bool, Any]:
        outcomes = decode_results(data, self.code_files)
        if self.index is None and len(outcomes) == 1:  # re-attached: the job's one input
            return next(iter(outcomes.values()))
        if self.index in outcomes:
            return outcomes[self.index]
        return False, self._failure(info)


class ChunkFuture(RemoteFuture[dict[int, tuple[bool, Any]]]):
    """The future of a job that runs several inputs: its result maps each input to (ok, value or error)."""

    def __init__(
        self, hub: Hub, namespace: str, info: JobInfo, run_id: str, call: str, name: str, indexes: list[int]
    ) -> None:
        super().__init__(hub, namespace, info, run_id, call, name)
        self.indexes = indexes

    def _outcome(self, info: JobInfo, data: bytes | None) -> tuple[bool, Any]:
        outcomes = decode_results(data, self.code_files)
        missing = [i for i in self.indexes if i not in outcomes]
        if missing:
            failure = self._failure(info)
            outcomes.update((i, (False, failure)) for i in missing)
        return True, outcomes


def decode_results(data: bytes | None, code_files: dict[str, str] | None = None) -> dict[int, tuple[bool, Any]]:
    """A chunk's result file: input index -> (True, value) or (False, exception with its remote traceback)."""
    if data is None:
        return {}
    raw, _ = read_results(data)
    return {index: _decode_payload(payload, code_files or {}) for index, payload in raw.items()}


_DYNAMIC_FRAME = re.compile(r'^( *)File "<dynamic-code>", line (\d+), in (\S+)$', re.MULTILINE)


def localize(traceback: str, code_files: dict[str, str]) -> str:
    """Point the frames of code that travelled by value (cloudpickle names it "<dynamic-code>") back at
    the caller's files, with their source lines, as a local traceback shows them."""

    def frame(match: re.Match[str]) -> str:
        indent, line, name = match.groups()
        path = code_files.get(name)
        if path is None:
            return match.group(0)
        source = linecache.getline(path, int(line)).strip()
        return f'{indent}File "{path}", line {line}, in {name}' + (f"\n{indent}  {source}" if source else "")

    return _DYNAMIC_FRAME.sub(frame, traceback)


def local_lines(lines: Iterable[str], code_files: dict[str, str]) -> Iterator[str]:
    """A job's log lines, with the frames of code that travelled by value pointed at the caller's files."""
    for line in lines:
        yield from localize(line, code_files).split("\n")


def _decode_payload(data: bytes, code_files: dict[str, str]) -> tuple[bool, Any]:
    try:
        payload = cloudpickle.loads(data)
    except Exception as e:  # e.g. the result's class cannot be imported here
        return False, RemoteError(type(e).__name__, f"the job's result could not be unpickled here: {e}")
    if payload.get("ok"):
        return True, payload["value"]
    error = payload.get("error")
    if error is None:
        error = _rebuild(payload.get("type", "Exception"), payload.get("message", ""))
    if payload.get("traceback"):
        error.__cause__ = RemoteTraceback(localize(payload["traceback"], code_files))
    return False, error


def _rebuild(type_name: str, message: str) -> BaseException:
    if type_name == "hfremote.errors.JobFailedError":
        return HFRemoteError(message)
    if type_name == "hfremote.errors.PicklingError":
        from .errors import PicklingError

        return PicklingError(message)
    builtin = getattr(builtins, type_name.rpartition(".")[2], None) if type_name.startswith("builtins.") else None
    if isinstance(builtin, type) and issubclass(builtin, BaseException):
        try:
            return builtin(message)
        except Exception:
            pass
    return RemoteError(type_name, message)


@dataclass(eq=False)
class _Run:
    hub: Hub
    namespace: str
    run_id: str
    since: float
    due: float
    futures: dict[str, list[RemoteFuture[Any]]] = field(default_factory=dict)  # job id -> its futures

    def interval(self) -> float:
        """Quick looks while the run is young (short calls come back fast), then back off to spare the API."""
        base = poll_interval(self.hub)
        age = time.monotonic() - self.since
        return min(base * (1 + age / 2.0), max(1.0, base * 10))


class Watcher:
    """One thread for the whole process: one list request per run with pending futures, when that run is due."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[tuple[int, str, str], _Run] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="hfremote-results")
        self._end_streams: set[str] = set()  # jobs whose log stream a thread follows to its end

    def watch(self, future: RemoteFuture[Any]) -> None:
        with self._lock:
            key = (id(future._hub), future.namespace, future.run_id)
            run = self._runs.get(key)
            if run is None:
                now = time.monotonic()
                run = _Run(future._hub, future.namespace, future.run_id, now, now + poll_interval(future._hub))
                self._runs[key] = run
            watching = run.futures.setdefault(future.job_id, [])
            if future not in watching:
                watching.append(future)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="hfremote-watcher", daemon=True)
                self._thread.start()
        self._wake.set()

    def look_now(self, future: RemoteFuture[Any]) -> None:
        """Look at the future's run at once (its job is known to have ended)."""
        with self._lock:
            run = self._runs.get((id(future._hub), future.namespace, future.run_id))
            if run is not None:
                run.due = 0.0
        self._wake.set()

    def forget(self, future: RemoteFuture[Any]) -> None:
        with self._lock:
            run = self._runs.get((id(future._hub), future.namespace, future.run_id))
            if run is not None:
                watching = run.futures.get(future.job_id, [])
                if future in watching:
                    watching.remove(future)
                if not watching:
                    run.futures.pop(future.job_id, None)

    def _loop(self) -> None:
        while True:
            now = time.monotonic()
            with self._lock:
                self._runs = {key: run for key, run in self._runs.items() if run.futures}
                due = [run for run in self._runs.values() if run.due <= now]
            for run in due:
                self._tick(run)
                run.due = time.monotonic() + run.interval()
            with self._lock:
                next_due = min((run.due for run in self._runs.values()), default=None)
            self._wake.wait(5.0 if next_due is None else max(0.0, next_due - time.monotonic()))
            self._wake.clear()

    def _tick(self, run: _Run) -> None:
        """One look at a run: its unfinished jobs in one list; the jobs that left that list, once each."""
        # A look that fails is skipped, not retried at length: the next tick looks again, and one run
        # whose endpoint is down must not hold up every other run's ticks.
        try:
            active = run.hub.list_jobs(run.namespace, {RUN_LABEL: run.run_id}, list(ACTIVE), tries=1)
        except BackendError as e:
            log.warning("hfremote: could not list the jobs of run %s: %s", run.run_id, e)
            return
        with self._lock:
            futures = {job_id: list(watching) for job_id, watching in run.futures.items()}
        for info in active:
            for future in futures.get(info.id, []):
                future._info = info
        self._stream_ends(run, [info.id for info in active if info.status.stage == "RUNNING" and info.id in futures])
        for info in active:
            futures.pop(info.id, None)
        if not futures:
            return
        # What is left has finished: fetch each final state once (one listing when many finished at once).
        try:
            if len(futures) > 3:
                done = run.hub.list_jobs(run.namespace, {RUN_LABEL: run.run_id}, list(TERMINAL), tries=1)
                finished = {info.id: info for info in done}
            else:
                finished = {job_id: run.hub.inspect(run.namespace, job_id, tries=1) for job_id in futures}
        except BackendError as e:
            log.warning("hfremote: could not read the finished jobs of run %s: %s", run.run_id, e)
            return
        for job_id in futures:
            final = finished.get(job_id)
            if final is not None and final.status.stage in TERMINAL:
                self._complete(run, job_id, final)

    def _complete(self, run: _Run, job_id: str, final: JobInfo) -> None:
        """Complete the futures of a job that has ended (once: the tick and an end stream may both see it)."""
        with self._lock:
            watching = run.futures.pop(job_id, [])
        for future in watching:
            future._info = final
            self._pool.submit(future._finish, final)

    def _stream_ends(self, run: _Run, running: list[str]) -> None:
        """Follow the log streams of running jobs (a few at a time) to learn the moment they end."""
        for job_id in running:
            with self._lock:
                if len(self._end_streams) >= _MAX_END_STREAMS:
                    return
                watching = run.futures.get(job_id, [])
                if job_id in self._end_streams or not watching or any(f._followed for f in watching):
                    continue
                self._end_streams.add(job_id)
            threading.Thread(
                target=self._await_end, args=(run, job_id), name=f"hfremote-end-{job_id}", daemon=True
            ).start()

    def _await_end(self, run: _Run, job_id: str) -> None:
        try:
            for _ in run.hub.log_stream(run.namespace, job_id, True, tail=1):
                pass  # only the end matters: the stream ends with the job
            final = run.hub.inspect(run.namespace, job_id)
            if final.status.stage in TERMINAL:
                self._complete(run, job_id, final)
        except Exception:  # a courtesy: the watcher's polling sees the end anyway
            pass
        finally:
            with self._lock:
                self._end_streams.discard(job_id)
            self._wake.set()


_WATCHER: list[Watcher] = []
_WATCHER_LOCK = threading.Lock()


def _watcher() -> Watcher:
    with _WATCHER_LOCK:
        if not _WATCHER:
            _WATCHER.append(Watcher())
        return _WATCHER[0]


def watch(future: RemoteFuture[Any]) -> None:
    _watcher().watch(future)


def wait(
    futures: Iterable[Future[Any]], timeout: float | None = None, return_when: str = "ALL_COMPLETED"
) -> tuple[set[Future[Any]], set[Future[Any]]]:
    """`concurrent.futures.wait` for RemoteFutures (and any other futures): (done, not_done)."""
    done, pending = concurrent.futures.wait(list(futures), timeout=timeout, return_when=return_when)
    return set(done), set(pending)


def as_completed(futures: Iterable[Future[R]], timeout: float | None = None) -> Iterator[Future[R]]:
    """Futures as they finish, like `concurrent.futures.as_completed`."""
    return concurrent.futures.as_completed(list(futures), timeout=timeout)


def gather(*futures: Future[Any], return_exceptions: bool = False, timeout: float | None = None) -> list[Any]:
    """The results of `futures` in their order; the first exception is raised unless `return_exceptions`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    out = []
    for future in futures:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            out.append(future.result(remaining))
        except concurrent.futures.TimeoutError:
            raise
        except BaseException as e:
            if not return_exceptions or isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            out.append(e)
    return out
