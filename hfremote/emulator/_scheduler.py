"""Scheduled jobs: cron specs that create ordinary jobs when they come due.

A background thread fires due schedules against the emulator clock, so tests move time forward with
`Emulator.advance()` instead of waiting for real minutes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import msgspec

from .._cron import next_run
from ._jobs import Jobs, owner, spec_fields
from ._specs import JobSpec, ScheduledJobRequest, check_job_spec, check_labels, check_schedule
from ._store import Record
from ._util import HTTPError, iso, new_id, not_found, parse_iso

ACTIVE = ("SCHEDULING", "RUNNING")
log = logging.getLogger("hfremote.emulator")


class Schedules:
    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs
        self.store, self.clock = jobs.store, jobs.clock
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="emulator-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    # -- records -----------------------------------------------------------------------------------
    def create(self, namespace: str, request: ScheduledJobRequest) -> Record:
        spec = check_job_spec(request.job_spec)
        check_schedule(request.schedule)
        now = self.clock.now()
        sched: Record = {
            "id": new_id(),
            "owner": owner(namespace, self.jobs.users),
            "createdAt": iso(now),
            "schedule": request.schedule,
            "suspend": bool(request.suspend),
            "concurrency": bool(request.concurrency),
            "jobSpec": spec_fields(spec),
            "status": {"nextJobRunAt": iso(next_run(request.schedule, now))},
            "_spec": msgspec.to_builtins(msgspec.structs.replace(spec, secrets={})),
        }
        self.store.put_scheduled(sched, spec.secrets)
        return sched

    def render(self, sched: Record) -> dict[str, Any]:
        info = {k: v for k, v in sched.items() if not k.startswith("_")}
        info["jobSpec"] = dict(info["jobSpec"])
        if sched["suspend"]:
            info["status"] = {k: v for k, v in sched["status"].items() if k != "nextJobRunAt"}
        return info

    # Changes, runs and deletes of one scheduled job take the lock and re-read it there: a request
    # racing a delete then finds it gone (404) instead of writing it back or running it after all.
    def _current(self, sched_id: str) -> Record:
        sched = self.store.scheduled(sched_id)
        if sched is None:
            raise not_found(f"Scheduled job {sched_id} not found")
        return sched

    def _save(self, sched: Record) -> Record:
        if not self.store.update_scheduled(sched):
            raise not_found(f"Scheduled job {sched['id']} not found")
        return sched

    def update(self, sched: Record, **changes: Any) -> Record:
        if "schedule" in changes:
            check_schedule(changes["schedule"])
        with self._lock:
            sched = self._current(sched["id"])
            sched.update(changes)
            if not sched["suspend"] and ("schedule" in changes or "suspend" in changes):
                sched["status"]["nextJobRunAt"] = iso(next_run(sched["schedule"], self.clock.now()))
            return self._save(sched)

    def set_labels(self, sched: Record, labels: dict[str, str]) -> Record:
        check_labels(labels)
        with self._lock:
            sched = self._current(sched["id"])
            sched["jobSpec"]["labels"] = labels
            sched["_spec"]["labels"] = labels
            return self._save(sched)

    def delete(self, sched_id: str) -> None:
        with self._lock:
            if not self.store.delete_scheduled(sched_id):
                raise not_found(f"Scheduled job {sched_id} not found")

    # -- running -----------------------------------------------------------------------------------
    def active_run(self, sched: Record) -> Record | None:
        runs = self.store.jobs(stages=ACTIVE, scheduled_id=sched["id"], limit=1)
        return runs[0] if runs else None

    def trigger(self, sched: Record) -> Record:
        with self._lock:
            sched = self._current(sched["id"])
            if not sched["concurrency"] and (active := self.active_run(sched)) is not None:
                raise HTTPError(
                    409,
                    f"Scheduled job {sched['id']} already has a run in progress ({active['id']}) and "
                    "concurrency is disabled",
                )
            spec = msgspec.convert(sched["_spec"], JobSpec)
            spec = msgspec.structs.replace(spec, secrets=self.store.scheduled_secrets(sched["id"]))
            job = self.jobs.create(
                sched["owner"]["name"], spec, spec.secrets, {"type": "scheduled-job", "id": sched["id"]}
            )
            sched["status"]["lastJob"] = {"id": job["id"], "at": job["createdAt"]}
            self._save(sched)
            return job

    def advance(self, seconds: float) -> list[Record]:
        """Move the clock forward and fire what became due; returns the jobs created."""
        # Under the lock: the background thread must not fire (and so hide from the caller) these runs.
        with self._lock:
            self.clock.advance(seconds)
            self.store.set_meta("clock_offset", str(self.clock.offset))
            return self.fire_due()

    def fire_due(self) -> list[Record]:
        """Start a run of every schedule that is due; returns the jobs created."""
        fired = []
        with self._lock:
            now = self.clock.now()
            for sched in self.store.all_scheduled():
                try:
                    due = sched["status"].get("nextJobRunAt")
                    if sched["suspend"] or due is None or parse_iso(due) > now:
                        continue
                    # A run still going with concurrency off: this occurrence is skipped, as cron would.
                    with contextlib.suppress(HTTPError):
                        fired.append(self.trigger(sched))
                    sched = self.store.scheduled(sched["id"]) or sched  # with the run `trigger` recorded
                    sched["status"]["nextJobRunAt"] = iso(next_run(sched["schedule"], now))
                    self.store.update_scheduled(sched)
                except Exception:  # one bad record must not stop the other schedules, nor pass unseen
                    log.exception("scheduled job %s could not fire", sched.get("id"))
        return fired

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.fire_due()
            except Exception:  # e.g. the store being closed under us: said, and tried again next tick
                log.exception("the scheduler's tick failed")
