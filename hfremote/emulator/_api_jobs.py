"""HTTP routes for identity, hardware, jobs (with their log and metric streams) and scheduled jobs."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ._hardware import hardware_table
from ._jobs import initiator
from ._runtime import TERMINAL
from ._specs import (
    ExposeRequest,
    JobSpec,
    LabelsRequest,
    ScheduledJobRequest,
    ScheduleRequest,
    check_job_spec,
    check_labels,
    decode,
)
from ._store import Record
from ._users import USER, owner_id
from ._util import HTTPError, bad_request, not_found

if TYPE_CHECKING:
    from ._server import Context

_KEEPALIVE_SECONDS = 15.0
_MAX_TAIL = 1_000_000
_RECHECK_SECONDS = 0.5  # how often a following log stream re-reads the stage with no news


def ctx_of(request: Request) -> Context:
    return request.app.state.ctx  # type: ignore[no-any-return]


def user_of(request: Request) -> str | None:
    """The user the request's token names (None: anonymous); set by the front door."""
    user: str | None = request.scope.get(USER)
    return user


def namespace_of(request: Request) -> str:
    """The namespace the request acts in: 401 without a token, 403 when the user is not a member."""
    return ctx_of(request).users.acting_in(user_of(request), request.path_params["namespace"])


async def body_of(request: Request, limit: int = 1 << 20) -> bytes:
    """The request body, refused by its declared length first and never buffered past `limit`."""
    declared = request.headers.get("content-length", "")
    too_big = declared.isdigit() and int(declared) > limit
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if too_big or size > limit:
            too_big = True  # the rest is read and dropped, so the connection stays usable
            continue
        chunks.append(chunk)
    if too_big:
        raise HTTPError(413, f"Request body is {declared or 'over ' + str(limit)} bytes; the limit here is {limit}")
    return b"".join(chunks)


async def drain(request: Request) -> None:
    """Read and drop a body nobody needs (bounded memory whatever its size)."""
    async for _ in request.stream():
        pass


def with_body(
    limit: int = 1 << 20,
) -> Callable[[Callable[[Request, bytes], Response]], Callable[[Request], Awaitable[Response]]]:
    """An endpoint whose body is read on the event loop, then whose work (SQLite, files) runs in a thread.

    Endpoints without a body are plain functions, which Starlette runs in its thread pool too: a slow
    disk or a big listing never stalls the other requests.
    """

    def wrap(fn: Callable[[Request, bytes], Response]) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(fn)
        async def endpoint(request: Request) -> Response:
            body = await body_of(request, limit)
            return await run_in_threadpool(fn, request, body)

        return endpoint

    return wrap


def cursor_of(request: Request) -> int:
    try:
        cursor = int(request.query_params.get("cursor", "0"))
    except ValueError:
        cursor = -1
    if not 0 <= cursor < 1 << 62:  # SQLite integers are 64-bit
        raise bad_request("Invalid cursor: use the Link header of the previous page")
    return cursor


def next_link(request: Request, cursor: int) -> dict[str, str]:
    """GitHub-style pagination: the client follows the Link as-is, so it is absolute and keeps the filters."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
    query.append(("cursor", str(cursor + ctx_of(request).page_size)))
    return {"Link": f'<{request.url.replace(query=urlencode(query))}>; rel="next"'}


# -- identity and hardware ---------------------------------------------------------------------------
async def whoami(request: Request) -> Response:
    ctx = ctx_of(request)
    user = ctx.users.acting_in(user_of(request), "me")
    orgs = ctx.users.orgs_of(user)
    return JSONResponse(
        {
            "type": "user",
            "id": owner_id(user),
            "name": user,
            "fullname": user,
            "email": None,
            "emailVerified": True,
            "isPro": False,
            "canPay": True,
            "orgs": [{"type": "org", "name": org, "fullname": org, "roleInOrg": "admin"} for org in orgs],
            "auth": {"type": "access_token", "accessToken": {"displayName": "emulator", "role": "write"}},
        }
    )


async def agent_harnesses(request: Request) -> Response:
    return JSONResponse({"standardEnvVars": [], "harnesses": {}})


async def hardware(request: Request) -> Response:
    return JSONResponse(hardware_table())


# -- jobs -------------------------------------------------------------------------------------------
def _job(request: Request) -> Record:
    ctx = ctx_of(request)
    ns = namespace_of(request)
    job = ctx.store.job(request.path_params["job_id"])
    if job is None or job["owner"]["name"] != ns:
        raise not_found(f"Job {request.path_params['job_id']} not found in namespace {ns!r}")
    return job


def _job_json(request: Request, job: Record, status: int = 200) -> Response:
    return JSONResponse(ctx_of(request).jobs.render(job), status_code=status)


@with_body()
def run_job(request: Request, body: bytes) -> Response:
    ctx = ctx_of(request)
    ns = namespace_of(request)
    spec = check_job_spec(decode(body, JobSpec, "job spec"))
    job = ctx.jobs.create(ns, spec, spec.secrets, initiator(ctx.users.acting_in(user_of(request), "me")))
    return _job_json(request, job)


def list_jobs(request: Request) -> Response:
    ctx = ctx_of(request)
    ns = namespace_of(request)
    stages = [s.upper() for s in request.query_params.getlist("stage")]
    labels = []
    for item in request.query_params.getlist("label"):
        key, sep, value = item.partition("=")
        if not sep:
            raise bad_request(f"Invalid label filter {item!r}: expected key=value")
        labels.append((key, value))
    cursor = cursor_of(request)
    page = ctx.store.jobs(ns, stages, labels, offset=cursor, limit=ctx.page_size + 1)
    headers = next_link(request, cursor) if len(page) > ctx.page_size else {}
    return JSONResponse([ctx.jobs.render(j) for j in page[: ctx.page_size]], headers=headers)


def inspect_job(request: Request) -> Response:
    return _job_json(request, _job(request))


def cancel_job(request: Request) -> Response:
    job = _job(request)
    ctx = ctx_of(request)
    ctx.runtime.cancel(job["id"])
    return _job_json(request, ctx.store.job(job["id"]) or job)


def duplicate_job(request: Request) -> Response:
    ctx = ctx_of(request)
    return _job_json(request, ctx.jobs.duplicate(_job(request)))


@with_body()
def job_labels(request: Request, body: bytes) -> Response:
    ctx = ctx_of(request)
    job = _job(request)
    labels = decode(body, LabelsRequest, "labels").labels
    check_labels(labels)
    with ctx.runtime.lock:
        job = ctx.store.job(job["id"]) or job
        job["labels"] = labels
        ctx.store.update_job(job)
    return _job_json(request, job)


@with_body()
def job_expose(request: Request, body: bytes) -> Response:
    ctx = ctx_of(request)
    job = _job(request)
    expose = decode(body, ExposeRequest, "expose settings")
    for port in (*expose.ports, *expose.ports_public):
        if not 1 <= port <= 65535:
            raise bad_request(f"Invalid port {port}")
    with ctx.runtime.lock:
        job = ctx.store.job(job["id"]) or job
        ports = sorted(set(expose.ports) | set(expose.ports_public))
        if job["status"]["stage"] == "RUNNING" and (taken := set(ports) & ctx.runtime.held_ports(job["id"])):
            # Jobs share the host's network: one port, one running job (see _proxy).
            raise HTTPError(409, f"Port(s) {sorted(taken)} are exposed by another running job; try when it ends")
        job["expose"] = {"ports": ports, "portsPublic": sorted(set(expose.ports_public))}
        ctx.store.update_job(job)
    return _job_json(request, job)


def _sse_response(stream: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


async def job_logs(request: Request) -> Response:
    ctx = ctx_of(request)
    job_id = (await run_in_threadpool(_job, request))["id"]
    tail_param = request.query_params.get("tail")
    try:
        tail = int(tail_param) if tail_param is not None else None
    except ValueError:
        raise bad_request(f"Invalid tail {tail_param!r}: expected an integer") from None
    if tail is not None and not 0 <= tail <= _MAX_TAIL:
        raise bad_request(f"Invalid tail {tail}: use 0 to {_MAX_TAIL} lines")

    async def stream() -> AsyncIterator[str]:
        changed = ctx.logs.subscribe(job_id)  # before the first read: no line or end can slip between
        try:
            # File and SQLite reads run in threads; a tail reads the end of the log only.
            if tail is not None:
                events, offset = await run_in_threadpool(ctx.logs.read_tail, job_id, tail)
                for event in events:
                    yield f"data: {event}\n\n"
            else:
                offset = 0
            last_beat = time.monotonic()
            while True:
                changed.clear()
                job = await run_in_threadpool(ctx.store.job, job_id)
                # The stage is read before the last lines: the runtime writes every line first, so after
                # a terminal stage reading to the end drains the log completely.
                terminal = job is None or job["status"]["stage"] in TERMINAL
                while True:  # one block (~1 MB) at a time: a big log never sits whole in memory
                    events, offset = await run_in_threadpool(ctx.logs.read, job_id, offset)
                    for event in events:
                        yield f"data: {event}\n\n"
                    if not events:
                        break
                if terminal or ctx.closing:
                    return
                if time.monotonic() - last_beat > _KEEPALIVE_SECONDS:
                    last_beat = time.monotonic()
                    yield ": keep-alive\n\n"
                # Woken at once by a new line or the job's end; the stage is re-checked every 0.5 s anyway.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), _RECHECK_SECONDS)
        finally:
            ctx.logs.unsubscribe(job_id, changed)

    return _sse_response(stream())


async def job_metrics(request: Request) -> Response:
    ctx = ctx_of(request)
    job = await run_in_threadpool(_job, request)
    if job["status"]["stage"] in TERMINAL:
        raise HTTPError(406, f"Job {job['id']} has finished ({job['status']['stage']}): it has no live metrics")
    job_id = job["id"]

    async def stream() -> AsyncIterator[str]:
        last_beat = time.monotonic()
        while not ctx.closing:
            current = await run_in_threadpool(ctx.store.job, job_id)
            if current is None or current["status"]["stage"] in TERMINAL:
                return
            sample = await run_in_threadpool(ctx.runtime.metrics, job_id)
            if sample is not None:
                yield f"event: metric\ndata: {json.dumps(sample)}\n\n"
                last_beat = time.monotonic()
            elif time.monotonic() - last_beat > _KEEPALIVE_SECONDS:
                last_beat = time.monotonic()
                yield ": keep-alive\n\n"
            await asyncio.sleep(1.0 if sample is not None else 0.1)

    return _sse_response(stream())


# -- scheduled jobs ---------------------------------------------------------------------------------
def _scheduled(request: Request) -> Record:
    ctx = ctx_of(request)
    ns = namespace_of(request)
    sched = ctx.store.scheduled(request.path_params["sched_id"])
    if sched is None or sched["owner"]["name"] != ns:
        raise not_found(f"Scheduled job {request.path_params['sched_id']} not found in namespace {ns!r}")
    return sched


def _scheduled_json(request: Request, sched: Record) -> Response:
    return JSONResponse(ctx_of(request).schedules.render(sched))


@with_body()
def create_scheduled(request: Request, body: bytes) -> Response:
    ctx = ctx_of(request)
    ns = namespace_of(request)
    sched_request = decode(body, ScheduledJobRequest, "scheduled job")
    return _scheduled_json(request, ctx.schedules.create(ns, sched_request))


def list_scheduled(request: Request) -> Response:
    ctx = ctx_of(request)
    ns = namespace_of(request)
    wanted = [tuple(item.partition("=")[::2]) for item in request.query_params.getlist("label")]
    found = [
        s for s in ctx.store.all_scheduled(ns) if all((s["jobSpec"].get("labels") or {}).get(k) == v for k, v in wanted)
    ]
    return JSONResponse([ctx.schedules.render(s) for s in found])


def scheduled_item(request: Request) -> Response:
    ctx = ctx_of(request)
    sched = _scheduled(request)
    if request.method == "DELETE":
        ctx.schedules.delete(sched["id"])  # 404 for the second of two racing deletes
        return JSONResponse({})
    return _scheduled_json(request, sched)


@with_body()
def scheduled_action(request: Request, body: bytes) -> Response:
    ctx = ctx_of(request)
    sched = _scheduled(request)
    action = request.path_params["action"]
    if action == "suspend":
        return _scheduled_json(request, ctx.schedules.update(sched, suspend=True))
    if action == "resume":
        return _scheduled_json(request, ctx.schedules.update(sched, suspend=False))
    if action == "schedule":
        schedule = decode(body, ScheduleRequest, "schedule").schedule
        return _scheduled_json(request, ctx.schedules.update(sched, schedule=schedule))
    if action == "run":
        return _job_json(request, ctx.schedules.trigger(sched))
    raise not_found(f"Unknown scheduled-job action {action!r}")


@with_body()
def scheduled_labels(request: Request, body: bytes) -> Response:
    ctx = ctx_of(request)
    sched = _scheduled(request)
    labels = decode(body, LabelsRequest, "labels").labels
    return _scheduled_json(request, ctx.schedules.set_labels(sched, labels))


def routes() -> list[Route]:
    job = "/api/jobs/{namespace}/{job_id}"
    sched = "/api/scheduled-jobs/{namespace}/{sched_id}"
    return [
        Route("/api/whoami-v2", whoami, methods=["GET"]),
        Route("/api/agent-harnesses", agent_harnesses, methods=["GET"]),
        Route("/api/jobs/hardware", hardware, methods=["GET"]),  # before /api/jobs/{namespace}
        Route("/api/jobs/{namespace}", run_job, methods=["POST"]),
        Route("/api/jobs/{namespace}", list_jobs, methods=["GET"]),
        Route(job, inspect_job, methods=["GET"]),
        Route(f"{job}/cancel", cancel_job, methods=["POST"]),
        Route(f"{job}/duplicate", duplicate_job, methods=["POST"]),
        Route(f"{job}/labels", job_labels, methods=["PUT"]),
        Route(f"{job}/expose", job_expose, methods=["PUT"]),
        Route(f"{job}/logs", job_logs, methods=["GET"]),
        Route(f"{job}/metrics", job_metrics, methods=["GET"]),
        Route("/api/scheduled-jobs/{namespace}", create_scheduled, methods=["POST"]),
        Route("/api/scheduled-jobs/{namespace}", list_scheduled, methods=["GET"]),
        Route(sched, scheduled_item, methods=["GET", "DELETE"]),
        Route(f"{sched}/labels", scheduled_labels, methods=["PUT"]),
        Route(sched + "/{action}", scheduled_action, methods=["POST"]),
    ]
