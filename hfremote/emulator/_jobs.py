"""Job records: created from a spec, rendered as the JobInfo the client parses."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import msgspec

from ._proxy import expose_urls
from ._runtime import TERMINAL, Runtime
from ._specs import JobSpec
from ._store import Record, Store
from ._users import Users, owner_id
from ._util import Clock, iso, new_id, parse_iso

SECRET_MASK = "********"  # the Hub keeps secrets encrypted and never echoes them


def owner(namespace: str, users: Users) -> dict[str, str]:
    return {"id": owner_id(namespace), "name": namespace, "type": "user" if users.is_user(namespace) else "org"}


def initiator(user: str) -> dict[str, str]:
    return {"type": "user", "id": owner_id(user), "name": user}


def spec_fields(spec: JobSpec) -> dict[str, Any]:
    """The job-spec part of a record, camelCase as on the wire, secrets masked.

    The request says `timeoutSeconds` and `attempts`; JobInfo and JobSpec read back `timeout` and `retry`.
    """
    skip = ("attempts", "ssh", "timeoutSeconds", "timeout", "retry")
    fields = {k: v for k, v in msgspec.to_builtins(spec).items() if v is not None and k not in skip}
    fields["volumes"] = [
        msgspec.to_builtins(v) | ({} if v.type == "bucket" else {"readOnly": True}) for v in spec.volumes
    ]
    fields["secrets"] = {k: SECRET_MASK for k in spec.secrets}
    fields["retry"] = (spec.attempts or 1) - 1
    if spec.timeout_seconds:
        fields["timeout"] = spec.timeout_seconds
    return fields


class Jobs:
    def __init__(self, store: Store, runtime: Runtime, clock: Clock, users: Users) -> None:
        self.store, self.runtime, self.clock, self.users = store, runtime, clock, users
        self.endpoint: Callable[[], str] = lambda: ""  # where exposed ports are served (set once serving)

    def create(
        self, namespace: str, spec: JobSpec, secrets: dict[str, str], started_by: dict[str, Any] | None = None
    ) -> Record:
        job: Record = {
            "id": new_id(),
            "createdAt": iso(self.clock.now()),
            **spec_fields(spec),
            "owner": owner(namespace, self.users),
            "status": {"stage": "SCHEDULING", "message": None},
            "initiator": started_by or initiator(self.users.default),
        }
        self.store.insert_job(job, secrets)
        self.runtime.notify()
        return job

    def duplicate(self, job: Record) -> Record:
        spec = msgspec.convert(
            {k: v for k, v in job.items() if k not in ("secrets", "retry", "timeout")}
            | {"attempts": (job.get("retry") or 0) + 1, "timeoutSeconds": job.get("timeout")},
            JobSpec,
        )
        started_by = {"type": "duplicated-job", "id": job["id"]}
        return self.create(job["owner"]["name"], spec, self.store.job_secrets(job["id"]), started_by)

    def render(self, job: Record) -> dict[str, Any]:
        info = copy.deepcopy(job)
        info["timeoutSeconds"] = info.get("timeout")
        info["durations"] = self._durations(job)
        if info["status"].get("message") is None:
            info["status"].pop("message")
        if urls := expose_urls(self.endpoint(), job):
            info["status"]["exposeUrls"] = urls
        return info

    def _durations(self, job: Record) -> dict[str, int]:
        now = self.clock.now()
        created = parse_iso(job["createdAt"])
        started = parse_iso(job["startedAt"]) if job.get("startedAt") else None
        finished = parse_iso(job["finishedAt"]) if job.get("finishedAt") else None
        end = finished or now
        out = {"totalSecs": int((end - created).total_seconds())}
        # As the Hub: only the total until the job runs (and for a job that ended before running).
        if started is not None:
            out["schedulingSecs"] = int((started - created).total_seconds())
            out["runningSecs"] = int((end - started).total_seconds())
        return out

    @staticmethod
    def is_terminal(job: Record) -> bool:
        return job["status"]["stage"] in TERMINAL
