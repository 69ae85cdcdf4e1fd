"""The engine: the one supervised background worker of a process that watches jobs, cancels them and
renews the leases of the runs it started.

    watch(future) ──► a run per run id ──► a tick when the run is due: one list of its unfinished jobs
                                             │ (the request grows with the unfinished jobs only)
                                             │ the log streams of a few running jobs end with them
                                             ▼ a job left the list
                      on a small pool: read its final state, download its result, complete its futures

The engine never dies: an unexpected error in a tick is logged and the run is looked at again later.
It never lets a caller hang either: when a run's endpoint stays unreachable longer than a bound
(`configure(unreachable_timeout=...)`, 5 minutes by default), each of the run's pending futures fails
with a `BackendError` saying how to attach the run again. Cancelling is a local change plus a queued
request (`cancel_job`); `flush` waits for the queued requests, with a bound, before the process ends.

A lease is a small file in a run's shared folder, rewritten every `ttl / 4` seconds while the run is
held; its jobs end themselves when it stops changing (the client was killed, even with SIGKILL). A
SIGTERM of the process (see `_signals`), or its end with jobs it never waited for, cancels the unfinished
jobs of the runs it owns (started, not detached), as Ctrl-C does.
"""

from __future__ import annotations

import atexit
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from huggingface_hub import JobInfo

from ._config import poll_interval, unreachable_timeout
from ._hub import Hub
from ._run import RUN_LABEL, Run, lease_record
from ._signals import install_sigterm
from .errors import BackendError

if TYPE_CHECKING:
    from ._future import RemoteFuture

log = logging.getLogger("hfremote")
T = TypeVar("T")
TERMINAL = ("COMPLETED", "CANCELED", "ERROR", "DELETED")
ACTIVE = ("SCHEDULING", "RUNNING")
# Log streams held open at once, each ending when its job does: the engine learns of those ends at
# once instead of at its next tick (seconds apart on the Hub). Polling still sees every end.
_MAX_END_STREAMS = 8
_CANCEL_FLUSH_SECONDS = 20.0
_LOOK_SECONDS = 60.0  # a look that gets no answer this long counts as failed (a frozen endpoint)


def _within(seconds: float, fn: Callable[[], T]) -> T:
    """`fn()`, or TimeoutError after `seconds`: the client sends without a read timeout, so a frozen
    endpoint would hold the look (and every run's future) forever. The thread left waiting is a daemon."""
    box: Future[T] = Future()

    def call() -> None:
        try:
            box.set_result(fn())
        except BaseException as e:
            box.set_exception(e)

    threading.Thread(target=call, name="hfremote-look", daemon=True).start()
    try:
        return box.result(timeout=seconds)
    except FutureTimeout:  # (the builtin TimeoutError from Python 3.11)
        raise TimeoutError(f"no answer in {seconds:.0f}s") from None


class _Workers:
    """A few daemon threads working through a queue. The engine's background requests (reading results,
    cancels, lease renewals) must never hold the process open at exit on a dead endpoint, and the
    threads of a ThreadPoolExecutor are joined when the interpreter exits, however long they wait."""

    def __init__(self, count: int, name: str) -> None:
        self._tasks: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = queue.SimpleQueue()
        self._count, self._name = count, name
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._tasks.put((future, fn, args))
        with self._lock:
            if len(self._threads) < self._count:
                thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
        return future

    def _work(self) -> None:
        while True:
            future, fn, args = self._tasks.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as e:  # kept in the future: a worker never dies of a task
                future.set_exception(e)
            # An idle worker must not keep its last task alive (`fn` may be a RemoteFuture's bound method,
            # and the future holds its result) until the next task comes.
            del future, fn, args


@dataclass(eq=False)
class _Run:
    hub: Hub
    namespace: str
    run_id: str
    since: float
    due: float
    futures: dict[str, list[RemoteFuture[Any]]] = field(default_factory=dict)  # job id -> its futures
    finishing: set[str] = field(default_factory=set)  # jobs whose end is being read on the pool
    failing_since: float | None = None  # the first of the failed looks in a row
    last_error: str = ""
    errors: int = 0  # unexpected errors in a row (backs the ticks off)
    asked: int = 0  # look_now() calls: one made during a tick must not be lost when the tick ends

    def interval(self) -> float:
        """Quick looks while the run is young (short calls come back fast), then back off to spare the API."""
        base = poll_interval(self.hub)
        age = time.monotonic() - self.since
        backoff = 2.0 ** min(self.errors, 5)  # unexpected errors in a row slow the looks down
        return float(min(base * (1 + age / 2.0), max(1.0, base * 10)) * backoff)


@dataclass(eq=False)
class _Lease:
    hub: Hub
    bucket: str
    path: str
    ttl: float
    holders: int = 0
    due: float = 0.0
    renewing: bool = False


class Engine:
    """One per process: one thread for the looks, a small pool for the reads, cancels and lease renewals."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # re-entrant: the SIGTERM handler may interrupt the main thread holding it
        # Set when the process cancels everything (exit, SIGTERM): no job may be created after that.
        self.closing = threading.Event()
        self._creating: dict[int, int] = {}  # thread -> creations under way
        self._creations = threading.Condition(threading.Lock())
        self._runs: dict[tuple[int, str, str], _Run] = {}
        self._leases: dict[tuple[int, str], _Lease] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = _Workers(4, "hfremote-results")
        self._cancels = _Workers(4, "hfremote-cancel")
        self._pending_cancels: set[Future[None]] = set()
        self._end_streams: set[str] = set()  # jobs whose log stream a thread follows to its end
        self._owned_runs: dict[str, tuple[Hub, str]] = {}  # runs this process started (or resumed), not detached

    # -- what callers use ------------------------------------------------------------------------
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
            self._ensure_thread()
        self._wake.set()

    def look_now(self, future: RemoteFuture[Any]) -> None:
        """Look at the future's run at once (its job is known to have ended)."""
        with self._lock:
            run = self._runs.get((id(future._hub), future.namespace, future.run_id))
            if run is not None:
                run.due = 0.0
                run.asked += 1
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

    def cancel_job(self, hub: Hub, namespace: str, job_id: str) -> Future[None]:
        """Queue the cancel of a job: returns at once; `flush` waits for the queued cancels."""

        def send() -> None:
            try:
                hub.cancel(namespace, job_id)
            except Exception as e:  # a job that ended meanwhile, or an endpoint that is down
                log.warning("hfremote: could not cancel job %s: %s", job_id, e)

        request = self._cancels.submit(send)
        with self._lock:
            self._pending_cancels.add(request)
        request.add_done_callback(self._cancel_done)
        return request

    def _cancel_done(self, request: Future[None]) -> None:
        with self._lock:
            self._pending_cancels.discard(request)

    def flush(self, timeout: float = _CANCEL_FLUSH_SECONDS) -> bool:
        """Wait (at most `timeout` seconds) for the queued cancels; whether they were all sent."""
        with self._lock:
            pending = list(self._pending_cancels)
        if not pending:
            return True
        _, not_done = wait_futures(pending, timeout=timeout)
        return not not_done

    # -- leases ----------------------------------------------------------------------------------
    def hold_lease(self, hub: Hub, bucket: str, path: str, ttl: float, now: bool = False) -> Callable[[], None]:
        """Keep a run's lease fresh until the returned function is called (as often as it was held);
        `now`: renew it at once (taking over a run whose client may have stopped renewing it)."""
        key = (id(hub), path)
        with self._lock:
            lease = self._leases.get(key)
            if lease is None:
                due = time.monotonic() + (0.0 if now else ttl / 4)
                lease = self._leases[key] = _Lease(hub, bucket, path, ttl, due=due)
            lease.holders += 1
            self._ensure_thread()
        self._wake.set()
        released = threading.Event()

        def release() -> None:
            if released.is_set():
                return
            released.set()
            with self._lock:
                lease.holders -= 1
                if lease.holders <= 0:
                    self._leases.pop(key, None)

        return release

    def own_run(self, hub: Hub, namespace: str, run_id: str) -> None:
        """A run this process started and did not detach: SIGTERM cancels its jobs. (A run this process
        only attached to, to read its results, is someone else's: its jobs are left alone.)"""
        with self._lock:
            self._owned_runs[run_id] = (hub, namespace)

    def _renew(self, lease: _Lease) -> None:
        try:
            lease.hub.upload(lease.bucket, [(lease_record(lease.ttl, False), lease.path)])
        except Exception as e:  # the next renewal tries again; the jobs allow a whole ttl
            log.warning("hfremote: could not renew the lease %s: %s", lease.path, e)
        finally:
            lease.renewing = False
            self._wake.set()

    # -- the loop --------------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="hfremote-engine", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                self._step()
            except Exception:  # never die: whatever went wrong, the futures still need a watcher
                log.exception("hfremote: unexpected error in the engine; going on")
                self._wake.wait(1.0)
                self._wake.clear()

    def _step(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._runs = {key: run for key, run in self._runs.items() if run.futures}
            due = [run for run in self._runs.values() if run.due <= now]
            leases = [lease for lease in self._leases.values() if lease.due <= now and not lease.renewing]
            for lease in leases:
                lease.renewing, lease.due = True, now + lease.ttl / 4
        for lease in leases:
            self._pool.submit(self._renew, lease)
        for run in due:
            asked = run.asked
            try:
                self._tick(run)
                run.errors = 0
            except Exception:
                run.errors += 1
                log.exception("hfremote: unexpected error watching run %s; looking again later", run.run_id)
            with self._lock:
                run.due = 0.0 if run.asked != asked else time.monotonic() + run.interval()
        with self._lock:
            dues = [run.due for run in self._runs.values()] + [lease.due for lease in self._leases.values()]
        next_due = min(dues, default=None)
        self._wake.wait(5.0 if next_due is None else max(0.0, next_due - time.monotonic()))
        self._wake.clear()

    def _tick(self, run: _Run) -> None:
        """One look at a run: its unfinished jobs in one list; the jobs that left that list, once each."""
        # A look that fails is not retried at length here: the next tick looks again, and one run whose
        # endpoint is down must not hold up every other run's ticks.
        started = time.monotonic()
        try:
            active = _within(
                min(_LOOK_SECONDS, unreachable_timeout()),
                lambda: run.hub.list_jobs(run.namespace, {RUN_LABEL: run.run_id}, list(ACTIVE), tries=1),
            )
        except Exception as e:
            self._failed_look(run, e, started)
            return
        run.failing_since = None
        with self._lock:
            futures = {job_id: list(watching) for job_id, watching in run.futures.items()}
        for info in active:
            for future in futures.get(info.id, []):
                future._info = info
        self._stream_ends(run, [info.id for info in active if info.status.stage == "RUNNING" and info.id in futures])
        for info in active:
            futures.pop(info.id, None)
        # What is left has finished: read each one's final state once, on the pool (a request per job
        # that ended, never a listing of every finished job of the run).
        for job_id in futures:
            with self._lock:
                if job_id in run.finishing:
                    continue
                run.finishing.add(job_id)
            self._pool.submit(self._read_end, run, job_id)

    def _failed_look(self, run: _Run, error: BaseException, started: float) -> None:
        now = time.monotonic()
        if run.failing_since is None:
            run.failing_since = started  # a look may spend a while in the client's own retries
        run.last_error = str(error)
        bound = unreachable_timeout()
        log.warning("hfremote: could not look at the jobs of run %s: %s", run.run_id, error)
        if now - run.failing_since < bound:
            return
        with self._lock:
            watching = [f for futures in run.futures.values() for f in futures]
            run.futures.clear()
        failure = BackendError(
            f"lost contact with {run.hub.endpoint}: no answer about run {run.run_id} for {bound:.0f}s "
            f"(last error: {run.last_error}). Its jobs may still be running; once the endpoint answers again, "
            f"attach the run with hfremote.RemoteRun.attach({run.run_id!r})"
        )
        for future in watching:
            future._fail(failure)

    def _read_end(self, run: _Run, job_id: str) -> None:
        started = time.monotonic()
        try:
            final = run.hub.inspect(run.namespace, job_id, tries=1)
        except Exception as e:
            self._failed_look(run, e, started)
            final = None
        finally:
            with self._lock:
                run.finishing.discard(job_id)
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
            final = run.hub.inspect(run.namespace, job_id, tries=1)
            if final.status.stage in TERMINAL:
                self._complete(run, job_id, final)
        except Exception:  # a courtesy: the ticks see the end anyway
            pass
        finally:
            with self._lock:
                self._end_streams.discard(job_id)
            self._wake.set()

    # -- the process ends ------------------------------------------------------------------------
    def create(self, run: Run, chunk: str) -> JobInfo | None:
        """Create the job of a run's uploaded chunk, unless the process is ending (exit, SIGTERM): then None,
        and a job whose creation was under way is cancelled with the others instead of outliving its client
        (`cancel_everything` waits for the creations under way before it sends its cancels)."""
        me = threading.get_ident()
        with self._creations:
            self._creating[me] = self._creating.get(me, 0) + 1
        try:
            if self.closing.is_set():
                return None
            info = run.create(chunk)
            if self.closing.is_set():
                self.cancel_job(run.hub, run.namespace, info.id)
                return None
            return info
        finally:
            with self._creations:
                self._creating[me] -= 1
                if not self._creating[me]:
                    del self._creating[me]
                self._creations.notify_all()

    def cancel_everything(self, look: bool = False) -> int:
        """Cancel the unfinished jobs of the runs this process owns; how many.

        `look` (SIGTERM): also list each owned run's unfinished jobs on the platform, for a job whose
        creation was answered but that was not watched yet when the signal came."""
        self.closing.set()
        me = threading.get_ident()  # (a SIGTERM handler runs on a thread that may itself be creating)
        with self._creations:  # bounded: a creation gives up after the hub's retries; exit must not wait long
            self._creations.wait_for(lambda: not set(self._creating) - {me}, timeout=CREATION_GRACE)
        with self._lock:
            runs = [run for run in self._runs.values() if run.run_id in self._owned_runs]
            owned = dict(self._owned_runs)
        cancelled: set[str] = set()
        for run in runs:
            with self._lock:
                jobs = list(run.futures.items())
            for job_id, futures in jobs:
                for future in futures:
                    future.cancel()
                if not futures:
                    self.cancel_job(run.hub, run.namespace, job_id)
                cancelled.add(job_id)
        for run_id, (hub, namespace) in owned.items() if look else ():
            try:
                active = hub.list_jobs(namespace, {RUN_LABEL: run_id}, list(ACTIVE), tries=1)
            except Exception as e:  # the platform is not answering: the jobs' lease ends them
                log.warning("hfremote: could not list the jobs of run %s to cancel them: %s", run_id, e)
                continue
            for info in active:
                if info.id not in cancelled:
                    self.cancel_job(hub, namespace, info.id)
                    cancelled.add(info.id)
        self.flush()
        return len(cancelled)


CREATION_GRACE = 10.0  # how long the end of the process waits for job creations under way
_ENGINE: list[Engine] = []
_ENGINE_LOCK = threading.Lock()


def engine() -> Engine:
    with _ENGINE_LOCK:
        if not _ENGINE:
            _ENGINE.append(Engine())
            atexit.register(_at_exit)
        install_sigterm()
        return _ENGINE[0]


def _at_exit() -> None:
    """The process ends with jobs it started still running (a `submit` never waited for): they are
    cancelled and it says so, as a killed process's jobs end with their lease; unless detached."""
    count = _ENGINE[0].cancel_everything() if _ENGINE else 0  # (and the cancels asked for before are sent)
    if count:
        print(
            f"hfremote: cancelled {count} unfinished job(s) at exit; a job outlives its process only with "
            "detach=True (then RemoteFuture.attach(job_id) or RemoteRun.attach(run_id) finds it again)",
            file=sys.stderr,
        )


def cancel_everything() -> int:
    """What SIGTERM does (see `_signals`): cancel the unfinished jobs of the runs this process owns."""
    return engine().cancel_everything(look=True) if _ENGINE else 0
