"""Scheduled functions: `@remote.schedule("@daily")` becomes a Hugging Face scheduled (cron) job.

    deploy(*args) ── pack function + arguments + job spec ──► spec hash
        no scheduled job named so        → upload schedules/<name>/<spec>/, create it
        same spec, other schedule        → reschedule in place
        same spec, same schedule         → nothing (no upload, no request that changes anything)
        other spec (code, args, options) → upload the new folder, create the new one, delete the old one

The name (module and qualified name, or `name=`) is a label on the scheduled job and on every run,
so deploys find it again and `runs()` finds its runs. Each run keeps its result under its own name
(`results-<job id>.pkl` in its chunk folder), so runs never overwrite each other. Every write to the
platform looks up by label before it is retried: a lost answer never makes a second schedule or run.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import sys
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar

from huggingface_hub import JobInfo

from ._calls import Packer, reduce_remote, short_name
from ._config import current_hub
from ._cron import schedule_problem
from ._future import RemoteFuture, watch
from ._hub import BUCKET, Hub
from ._inside import LocalFunction
from ._options import Options, build, check_flag, sanitize
from ._origins import Rules
from ._packing import Scan, check_function
from ._run import CALL_LABEL, RUN_LABEL, Layout, Run, chunk_name
from .errors import BackendError, HFRemoteError, OptionsError

P = ParamSpec("P")
R = TypeVar("R")
SCHEDULE_LABEL, SPEC_LABEL = "hfremote-schedule", "hfremote-spec"
_RESULT_MARKER = "hfremote: this run's result is "  # printed by _entry.py


@dataclass(frozen=True)
class Deployment:
    """What `deploy()` did: "created", "updated", "rescheduled" or "unchanged"."""

    name: str
    action: str
    scheduled_job_id: str
    schedule: str


@dataclass(frozen=True)
class ScheduleInfo:
    name: str
    scheduled_job_id: str
    schedule: str | None
    suspended: bool
    next_run: datetime | None
    last_run: datetime | None
    last_job_id: str | None


def _module_name(fn: Callable[..., Any]) -> str:
    """A stable name for the function's module: a script's file name rather than `__main__`."""
    if fn.__module__ == "__main__":
        main = sys.modules.get("__main__")
        file = getattr(main, "__file__", None)
        return Path(file).stem if file else "__main__"
    return fn.__module__


class ScheduledRun(RemoteFuture[R]):
    """One run of a scheduled function; its result file is named after the run's job (see `Layout.results`)."""

    def _outcome(self, info: JobInfo, data: bytes | None) -> tuple[bool, Any]:
        if data is None:  # a platform that sets no JOB_ID: the entry script logged the name it chose
            with contextlib.suppress(HFRemoteError):
                for line in self._all_logs():
                    if line.startswith(_RESULT_MARKER):
                        name = line[len(_RESULT_MARKER) :].strip()
                        data = self._hub.download(
                            f"{self.namespace}/{BUCKET}", f"{self.layout.chunk(self.call)}/{name}"
                        )
                        break
        return super()._outcome(info, data)


_runs: weakref.WeakValueDictionary[tuple[int, str, str], ScheduledRun[Any]] = weakref.WeakValueDictionary()
_runs_lock = threading.Lock()


class ScheduledFunction(Generic[P, R]):
    """A function deployed as a Hugging Face scheduled job."""

    def __init__(
        self, fn: Callable[P, R], schedule: str, options: Options, concurrency: bool | None, suspend: bool | None
    ) -> None:
        check_function(fn, allow_async=False)  # its runs' results are typed as what fn returns
        self._fn, self.schedule, self._options = fn, schedule, options  # the setter checks the cron
        self.concurrency, self.suspended_on_deploy = concurrency, suspend
        qualname = getattr(fn, "__qualname__", None) or short_name(fn)
        self.name = sanitize(options.name or f"{_module_name(fn)}.{qualname}")
        self.__doc__, self.__wrapped__ = fn.__doc__, fn

    @property
    def schedule(self) -> str:
        """The cron the next `deploy()` sets; setting it checks it (a bad one must not reach an upload)."""
        return self._schedule

    @schedule.setter
    def schedule(self, cron: str) -> None:
        if problem := schedule_problem(cron):
            raise OptionsError(problem)
        self._schedule = cron

    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function here, as a plain Python call."""
        return self._fn(*args, **kwargs)

    def __reduce_ex__(self, protocol: Any) -> str | tuple[Any, ...]:
        # Used by a function running in a job, it is the plain function there (the job has no hfremote).
        return reduce_remote(self, (LocalFunction, (self._fn,)))

    # -- deploy ----------------------------------------------------------------------------------
    def deploy(self, *args: P.args, **kwargs: P.kwargs) -> Deployment:
        """Create or update the scheduled job so it runs `fn(*args, **kwargs)` on the schedule. Idempotent."""
        packer = Packer(self._fn, Rules(self._options.ship, self._options.pin))
        call = packer.pack(args, kwargs)  # a bad argument fails before any request
        hub = current_hub()
        prepared = Run(hub, self._fn, self._options, packer=packer)  # no lease: its runs have no client to outlive
        prepared.name = self.name
        digest = self._digest(prepared, call.read())
        prepared.run_id = f"{self.name[:80]}-{digest}"
        prepared.layout = Layout(f"schedules/{self.name}/{digest}")
        existing = self._existing(hub, prepared.namespace)
        current = existing[0] if existing else None
        if current is not None and (current.job_spec.labels or {}).get(SPEC_LABEL) == digest:
            if current.schedule == self.schedule:
                return Deployment(self.name, "unchanged", current.id, self.schedule)
            hub.scheduled(prepared.namespace, "update_schedule", current.id, schedule=self.schedule)
            return Deployment(self.name, "rescheduled", current.id, self.schedule)
        chunk = chunk_name(0, 1)
        prepared.upload({chunk: [(0, call)]})
        labels = {**prepared.labels(chunk), SCHEDULE_LABEL: self.name, SPEC_LABEL: digest}
        created = hub.create_scheduled(
            prepared.namespace,
            key={SCHEDULE_LABEL: self.name, SPEC_LABEL: digest},
            schedule=self.schedule,
            suspend=self.suspended_on_deploy,
            concurrency=self.concurrency,
            labels=labels,
            **prepared.spec(chunk, each_run=True),
        )
        # Two deploys racing may both create: keep the oldest of the newest spec, drop the rest.
        survivors = [s for s in self._existing(hub, prepared.namespace) if s.id not in {e.id for e in existing}]
        keep = survivors[0] if survivors else created
        for stale in [*existing, *survivors[1:]]:
            _delete_scheduled(hub, prepared.namespace, stale.id)
        return Deployment(self.name, "updated" if existing else "created", keep.id, self.schedule)

    def _digest(self, prepared: Run, call: bytes) -> str:
        """What makes a deployment different: code, arguments, job spec, secret values (hashed), schedule options."""
        spec = prepared.spec(chunk_name(0, 1), each_run=True)
        spec["volumes"] = [repr(v) for v in spec["volumes"][2:]]
        spec["secrets"] = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in (spec["secrets"] or {}).items()}
        h = hashlib.sha256()
        for part in (
            prepared.entry.encode(),
            prepared.function,
            call,
            json.dumps(spec, sort_keys=True).encode(),
            json.dumps([self.concurrency, self.suspended_on_deploy, self._options.labels]).encode(),
        ):
            h.update(hashlib.sha256(part).digest())
        return h.hexdigest()[:16]

    def _existing(self, hub: Hub, namespace: str) -> list[Any]:
        return deployed(self.name, namespace)

    def _current(self) -> tuple[Hub, str, Any]:
        found = deployed(self.name, self._options.namespace)
        if not found:
            raise HFRemoteError(f"scheduled function {self.name!r} is not deployed: call .deploy() first")
        hub = current_hub()
        return hub, hub.namespace(self._options.namespace), found[-1]

    # -- control ---------------------------------------------------------------------------------
    def info(self) -> ScheduleInfo:
        """The deployed schedule: its cron, whether it is suspended, its next and last runs."""
        _, _, sched = self._current()
        status = sched.status
        last = status.last_job if status is not None else None
        return ScheduleInfo(
            self.name,
            sched.id,
            sched.schedule,
            bool(sched.suspend),
            status.next_job_run_at if status is not None else None,
            last.at if last is not None else None,
            last.id if last is not None else None,
        )

    def trigger(self) -> ScheduledRun[R]:
        """Run it now (outside the schedule); the run's future."""
        hub, namespace, sched = self._current()
        info: JobInfo = hub.trigger_scheduled(namespace, sched.id, {SCHEDULE_LABEL: self.name})
        return self._future(hub, namespace, info)

    def runs(self, limit: int = 10) -> list[ScheduledRun[R]]:
        """Futures of the latest runs (scheduled or triggered), newest first, with their results."""
        hub = current_hub()
        namespace = hub.namespace(self._options.namespace)
        jobs = hub.list_jobs(namespace, {SCHEDULE_LABEL: self.name})
        jobs.sort(key=lambda j: (j.created_at or datetime.min, j.id), reverse=True)
        return [self._future(hub, namespace, info) for info in jobs[:limit]]

    @functools.cached_property
    def _code_files(self) -> dict[str, str]:
        """Where the function's code lives, for its runs' tracebacks (one scan, not one per run)."""
        return Scan(self._fn).code_files

    def _future(self, hub: Hub, namespace: str, info: JobInfo) -> ScheduledRun[R]:
        # One future per run: the watcher keeps one future per job, so a second one (runs() after
        # trigger(), or runs() twice) would leave the first one pending forever.
        with _runs_lock:
            known: ScheduledRun[R] | None = _runs.get((id(hub), namespace, info.id))
            if known is not None:
                return known
            labels = info.labels or {}
            future: ScheduledRun[R] = ScheduledRun(
                hub, namespace, info, labels.get(RUN_LABEL, ""), labels.get(CALL_LABEL, chunk_name(0, 1)), self.name
            )
            future.code_files = self._code_files
            _runs[(id(hub), namespace, info.id)] = future
        watch(future)
        return future

    def suspend(self) -> None:
        """Stop firing (runs already going are not touched)."""
        control(self.name, "suspend", self._options.namespace)

    def resume(self) -> None:
        control(self.name, "resume", self._options.namespace)

    def delete(self) -> None:
        """Delete the scheduled job and every file it uploaded (its past runs' results included)."""
        control(self.name, "delete", self._options.namespace)

    def __repr__(self) -> str:
        return f"<ScheduledFunction {self.name} {self.schedule!r} flavor={self._options.flavor}>"


def deployed(name: str | None = None, namespace: str | None = None) -> list[Any]:
    """The scheduled jobs of hfremote's scheduled functions (all, or the one named), oldest first."""
    hub = current_hub()
    ns = hub.namespace(namespace)
    labels = {SCHEDULE_LABEL: name} if name else {}
    found = [s for s in hub.list_scheduled(ns, labels) if SCHEDULE_LABEL in (s.job_spec.labels or {})]
    return sorted(found, key=lambda s: (s.created_at or datetime.min, s.id))


def _delete_scheduled(hub: Hub, namespace: str, sched_id: str) -> None:
    """Delete one scheduled job; one already gone (a racing deploy or delete removed it) is fine."""
    try:
        hub.scheduled(namespace, "delete", sched_id)
    except BackendError as e:
        if getattr(getattr(e.__cause__, "response", None), "status_code", None) != 404:
            raise


def control(name: str, action: str, namespace: str | None = None) -> Any:
    """suspend, resume, trigger or delete a deployed scheduled function by name (the `hfremote schedules` verbs)."""
    found = deployed(name, namespace)
    if not found:
        raise HFRemoteError(f"no scheduled function named {name!r} is deployed (see `hfremote schedules`)")
    hub = current_hub()
    ns = hub.namespace(namespace)
    if action == "delete":
        for sched in found:
            _delete_scheduled(hub, ns, sched.id)
        bucket = f"{ns}/{BUCKET}"
        files = hub.list_files(bucket, f"schedules/{name}")
        if files:
            hub.delete(bucket, files)
        return None
    if action == "trigger":
        return hub.trigger_scheduled(ns, found[-1].id, {SCHEDULE_LABEL: name})
    return hub.scheduled(ns, action, found[-1].id)


def schedule(
    cron: str, *, concurrency: bool | None = None, suspend: bool | None = None, **options: Any
) -> Callable[[Callable[P, R]], ScheduledFunction[P, R]]:
    """`@remote.schedule("@daily", flavor=..., timeout=...)`: a function deployed as a scheduled job.

    `cron` is a preset (@hourly, @daily, @weekly, @monthly, @yearly, @annually) or 5-field cron;
    `concurrency` lets a run start while the previous one is still going; `suspend` deploys it paused.
    """
    if problem := schedule_problem(cron):
        raise OptionsError(problem)
    check_flag("concurrency", concurrency, optional=True)
    check_flag("suspend", suspend, optional=True)
    settings = build(None, **options)

    def decorate(fn: Callable[P, R]) -> ScheduledFunction[P, R]:
        return ScheduledFunction(fn, cron, settings, concurrency, suspend)

    return decorate
