"""RemoteFuture: the result of a function running as a job, completed by the engine (`_engine.py`).

    submit ──► RemoteFuture (PENDING) ──► the engine sees its job end
                           download the chunk's result file from the run folder
                           value → set_result · user exception → set_exception(original type,
                           remote traceback as __cause__) · no result → JobFailedError

A future stays PENDING while its job runs, so `Future.cancel()` keeps its standard meaning: it changes
the future's state at once, never blocks and never raises; the job's cancel is a queued request.
A future is also awaitable (`await future`, `asyncio.gather(*futures)`), through `asyncio.wrap_future`.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import linecache
import logging
import re
import time
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures._base import CANCELLED, PENDING
from typing import Any, Generic, TypeVar

import cloudpickle
from huggingface_hub import JobInfo

from ._config import current_hub
from ._console import strip_entry_frames
from ._engine import TERMINAL, engine
from ._entry import SETUP_FAILURE, read_results
from ._hub import BUCKET, Hub
from ._raised import rebuild_exception
from ._run import CALL_LABEL, RUN_LABEL, Layout, chunk_indexes
from .errors import BackendError, HFRemoteError, JobFailedError, RemoteTraceback

R = TypeVar("R")
log = logging.getLogger("hfremote")
_LOG_TAIL = 20


class RemoteError(HFRemoteError):
    """An exception raised in the job that could not be re-created here (its type and message are kept)."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name, self.message = type_name, message


class RemoteFuture(Future[R], Generic[R]):
    """The result of a function running as a job: a `concurrent.futures.Future` with the job attached."""

    def __init__(
        self,
        hub: Hub,
        namespace: str,
        info: JobInfo,
        run_id: str,
        call: str,
        name: str = "",
        index: int | None = None,
        layout: Layout | None = None,
    ) -> None:
        super().__init__()
        self._hub, self.namespace, self._info = hub, namespace, info
        self.run_id, self.call, self.name = run_id, call, name or info.id
        self.index = index  # the input this future stands for (None when re-attached: the job's only one)
        self._followed = False
        self.code_files: dict[str, str] = {}  # function name -> its file here, for the remote traceback
        self.layout = layout or Layout.of_job(info) or Layout.of_run(run_id)

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
                # The engine watches the job whatever happens to its logs: stop as soon as it has ended.
                if concurrent.futures.wait([self], timeout=min(0.2 * 2**failures, 5.0)).done:
                    return
            if self.done():
                break
            try:
                self._info = self._hub.inspect(self.namespace, self.job_id, tries=1)
            except HFRemoteError:
                continue
            if self._info.status.stage in TERMINAL:
                engine().look_now(self)  # the job has ended: complete the future now, not at the next tick
                break
        with contextlib.suppress(HFRemoteError):
            yield from self._all_logs()[seen:]

    def log_tail(self, lines: int, tries: int = 8) -> list[str]:
        """The job's last log lines, asked as a tail: the cost does not grow with the log."""
        return self._hub.call(
            "reading logs",
            lambda: list(self._hub.log_stream(self.namespace, self.job_id, False, tail=lines)),
            tries=tries,
        )

    def _all_logs(self) -> list[str]:
        return self._hub.call("reading logs", lambda: list(self._hub.log_stream(self.namespace, self.job_id, False)))

    def metrics(self) -> dict[str, Any] | None:
        """One sample of the running job's metrics (CPU, memory, GPUs), or None once it has finished."""
        return self._hub.metrics(self.namespace, self.job_id)

    def cancel(self) -> bool:
        """Cancel the job (unless it has finished already): returns at once, the request is queued."""
        if not super().cancel():
            return False
        self._notify_cancelled()
        engine().forget(self)
        engine().cancel_job(self._hub, self.namespace, self.job_id)
        return True

    def __await__(self) -> Generator[Any, None, R]:
        """`await future` in a coroutine: its value, without blocking the event loop. As with any future
        that asyncio wraps, cancelling the awaiting task cancels the future, and so the job."""
        import asyncio  # not at import: the command line does not need it

        return asyncio.wrap_future(self).__await__()

    # -- re-attach -------------------------------------------------------------------------------
    @classmethod
    def attach(cls, job_id: str, namespace: str | None = None) -> RemoteFuture[Any]:
        """The future of a job started earlier (by this or another process), e.g. after a crash.

        A job that ran one input gives that input's value; a job of a map that ran a chunk of inputs gives
        a dict of each input's index to its value (or its exception).
        """
        if not isinstance(job_id, str) or not job_id.strip("/ "):
            raise TypeError(f"job_id={job_id!r} must be a job id such as '68f0c3a1e2d4b5a6c7d8e9f0'")
        hub = current_hub()
        ns = hub.namespace(namespace or (job_id.split("/")[0] if "/" in job_id else None))
        job_id = job_id.split("/")[-1]
        info = hub.inspect(ns, job_id)
        labels = info.labels or {}
        if RUN_LABEL not in labels or CALL_LABEL not in labels:
            raise HFRemoteError(f"job {job_id} was not started by hfremote (it has no {RUN_LABEL} label)")
        run_id, call, name = labels[RUN_LABEL], labels[CALL_LABEL], labels.get("name", "")
        indexes = chunk_indexes(call)
        future: RemoteFuture[Any]
        if indexes is not None and len(indexes) > 1:
            future = ChunkFuture(hub, ns, info, run_id, call, name, list(indexes), values_only=True)
        else:
            future = cls(hub, ns, info, run_id, call, name)
        engine().watch(future)
        return future

    def __repr__(self) -> str:
        return f"<RemoteFuture {self.name} job={self.job_id} stage={self._info.status.stage} state={self._state}>"

    # -- completion (engine only) ----------------------------------------------------------------
    def _notify_cancelled(self) -> None:
        """Tell the waiters (`wait`, `as_completed`) that it is cancelled: for a plain Future an executor's
        worker does so when it meets the cancelled call, and no worker will meet this one."""
        with self._condition:
            if self._state == CANCELLED:
                self.set_running_or_notify_cancel()

    def _claim(self) -> bool:
        """Whether the caller may complete it now (once): False if it was cancelled or completed."""
        with self._condition:  # (re-entrant)
            return self._state in (PENDING, CANCELLED) and self.set_running_or_notify_cancel()

    def _fail(self, error: BaseException) -> None:
        if self._claim():
            self.set_exception(error)

    def _finish(self, info: JobInfo) -> None:
        self._info = info
        try:
            data = self._hub.download(f"{self.namespace}/{BUCKET}", self._result_path())
        except Exception as e:  # whatever happens, the future must end: nothing else will complete it
            error = e if isinstance(e, BackendError) else BackendError(f"reading the result of {self.job_id}: {e}")
            outcome: tuple[bool, Any] = (False, error)
        else:
            outcome = self._outcome(info, data)
        if not self._claim():
            return  # cancelled meanwhile
        ok, value = outcome
        if ok:
            self.set_result(value)
        else:
            self.set_exception(value)

    def _result_path(self) -> str:
        return self.layout.results(self.call, self.job_id)

    def _failure(self, info: JobInfo) -> JobFailedError:
        """What an input that got no result raises: the job's stage, message, URL and last log lines."""
        tail: list[str] = []
        with contextlib.suppress(HFRemoteError):  # the logs are a courtesy; the failure is what matters
            tail = self.log_tail(_LOG_TAIL, tries=2)
        message = info.status.message or (
            "finished without writing its result" if info.status.stage == "COMPLETED" else None
        )
        return JobFailedError(self.job_id, str(info.status.stage), message, self.url, tail)

    def _outcome(self, info: JobInfo, data: bytes | None) -> tuple[bool, Any]:
        outcomes = self._decode(info, data)
        if self.index is None and len(outcomes) == 1:  # re-attached: the job's one input
            return next(iter(outcomes.values()))
        if self.index in outcomes:
            return outcomes[self.index]
        return False, self._failure(info)

    def _decode(self, info: JobInfo, data: bytes | None) -> dict[int, tuple[bool, Any]]:
        outcomes = decode_results(data, self.code_files)
        for index, (ok, value) in outcomes.items():
            if not ok and isinstance(value, _SetupFailure):  # the job could not set the call up
                failure = JobFailedError(self.job_id, str(info.status.stage), value.message, self.url)
                failure.__cause__ = value.__cause__
                outcomes[index] = (False, failure)
        return outcomes


class ChunkFuture(RemoteFuture[dict[int, Any]]):
    """The future of a job that runs several inputs: its result maps each input to (ok, value or error),
    or, for a future attached by job id (`values_only`), to the value or the exception itself."""

    def __init__(
        self,
        hub: Hub,
        namespace: str,
        info: JobInfo,
        run_id: str,
        call: str,
        name: str,
        indexes: list[int],
        layout: Layout | None = None,
        values_only: bool = False,
    ) -> None:
        super().__init__(hub, namespace, info, run_id, call, name, layout=layout)
        self.indexes, self.values_only = indexes, values_only

    def _outcome(self, info: JobInfo, data: bytes | None) -> tuple[bool, Any]:
        outcomes = self._decode(info, data)
        missing = [i for i in self.indexes if i not in outcomes]
        if missing:
            failure = self._failure(info)
            outcomes.update((i, (False, failure)) for i in missing)
        if self.values_only:
            return True, {index: value for index, (_, value) in sorted(outcomes.items())}
        return True, outcomes


class _SetupFailure(HFRemoteError):
    """A job's report that it could not set the call up (Python or cloudpickle mismatch)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
        error = rebuild_exception(payload) or _rebuild(payload.get("type", "Exception"), payload.get("message", ""))
    if isinstance(error, (asyncio.CancelledError, concurrent.futures.CancelledError)):
        # raised by the function in its job: here it would read as this future (or the awaiting task) being
        # cancelled, and asyncio would drop it silently
        error = RemoteError(f"{type(error).__module__}.{type(error).__qualname__}", str(error))
    if payload.get("traceback"):
        error.__cause__ = RemoteTraceback(strip_entry_frames(localize(payload["traceback"], code_files)))
    return False, error


def _rebuild(type_name: str, message: str) -> BaseException:
    if type_name == SETUP_FAILURE:
        return _SetupFailure(message)
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


def watch(future: RemoteFuture[Any]) -> None:
    engine().watch(future)


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
