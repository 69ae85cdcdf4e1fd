"""The ASGI application: routes, authentication, errors as the Hub words them, and test controls."""

from __future__ import annotations

import json
import logging
import re
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import _api_buckets, _api_jobs
from ._api_jobs import body_of
from ._faults import INTERNAL, FaultMiddleware, FaultRule
from ._proxy import Proxy
from ._users import USER
from ._util import HTTPError, bad_request, json_object

if TYPE_CHECKING:
    from ._server import Context

log = logging.getLogger("hfremote.emulator")

# Routes that need no Hub token: the client's telemetry probes, the CAS (checked by Xet token) and file
# downloads (checked by the bucket's visibility).
_PUBLIC_PREFIXES = ("/api/agent-harnesses", "/v1/telemetry", "/cas/", "/buckets/")
# What a visitor without a token may ask; the route then answers only for public buckets.
_ANONYMOUS = re.compile(r"^/api/buckets/[^/]+(/[^/]+(/(tree(/.*)?|paths-info|xet-read-token))?)?$")


class FrontDoor:
    """Checks the token, stamps a single `Date` from the emulator clock and records every request."""

    def __init__(self, app: ASGIApp, ctx: Context) -> None:
        self.app, self.ctx = app, ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        status = 0
        # The emulator's own CAS uploads (turning files jobs wrote into xorbs) are not a client's requests.
        internal = self.ctx.internal_headers(scope["headers"])
        scope[INTERNAL] = internal

        async def stamped_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # Recorded as the answer starts, so a client that has its response sees it counted.
                if not internal:
                    self.ctx.record(scope["method"], path, status)
                # One Date header, from the emulator clock: no-follow log reads compare it with
                # log timestamps, and a duplicated or naive Date crashes the client.
                date = format_datetime(self.ctx.clock.now(), usegmt=True).encode()
                message["headers"] = [*message.get("headers", []), (b"date", date)]
            await send(message)

        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        sent, user = self.ctx.users.from_authorization(authorization)
        scope[USER] = user
        public = path.startswith(_PUBLIC_PREFIXES)
        if not public and (user is None and (sent or not _ANONYMOUS.match(path))):
            body = json.dumps({"error": "Invalid credentials in Authorization header"}).encode()
            await stamped_send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"x-error-message", b"Invalid credentials in Authorization header"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body if scope["method"] != "HEAD" else b""})
            return
        try:
            await self.app(scope, receive, stamped_send)
        finally:
            if status == 0 and not internal:  # the connection ended before any answer
                self.ctx.record(scope["method"], path, 0)


def _error(
    status: int, message: str, headers: dict[str, str] | None = None, body: dict[str, Any] | None = None
) -> Response:
    # The client reads X-Error-Message first, then the JSON `error`. A header value is printable ASCII
    # (a NUL or a newline from a path parameter would make the server drop the connection unanswered).
    safe = "".join(c if " " <= c <= "~" else ascii(c)[1:-1] for c in message[:1000]).strip()
    return JSONResponse(
        body or {"error": message}, status_code=status, headers={"X-Error-Message": safe, **(headers or {})}
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPError)
    return _error(exc.status, exc.message, exc.headers, exc.body)


async def _starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _error(404, f"No route {request.method} {request.url.path} on the emulator")
    if exc.status_code == 405:
        return _error(405, f"Method {request.method} is not allowed on {request.url.path}")
    return _error(exc.status_code, str(exc.detail))


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Never a stack trace in the body: the details go to the emulator's log.
    if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError, msgspec.DecodeError)):
        return _error(400, f"Malformed request body: {exc}")
    log.exception("internal error on %s %s", request.method, request.url.path)
    return _error(500, "Internal emulator error; see the emulator's log")


_MAX_ADVANCE = 100 * 365 * 86400  # a century: far enough for any schedule, and a datetime stays valid


# -- test controls (authenticated like the API) --------------------------------------------------------
async def control(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    action = request.path_params["action"]
    payload = json_object(await body_of(request), "control request")
    if not isinstance(payload, dict):
        raise bad_request("Control requests take a JSON object")
    if action == "advance":
        seconds = payload.get("seconds")
        # NaN or Infinity (which Python's JSON accepts) would poison the clock for every later request.
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= _MAX_ADVANCE:
            raise bad_request(f'advance takes {{"seconds": <a number from 0 to {_MAX_ADVANCE}>}}')
        if ctx.clock.now().year + seconds / (365 * 86400) > 9000:  # repeated advances must not overflow dates
            raise bad_request("advance would move the emulator clock past the year 9000")
        fired = ctx.advance(float(seconds))
        return JSONResponse({"now": ctx.clock.now().isoformat(), "fired": fired})
    if action == "fire":
        return JSONResponse({"fired": [job["id"] for job in ctx.schedules.fire_due()]})
    if action == "faults":
        if request.method == "DELETE":
            ctx.faults.clear()
        elif request.method == "POST":
            try:
                spec = payload.get("spec")
                rule = ctx.faults.add(spec if isinstance(spec, str) else FaultRule(**payload))
            except (TypeError, ValueError) as e:
                raise bad_request(f"Invalid fault rule: {e}") from None
            return JSONResponse(rule.to_dict())
        return JSONResponse([r.to_dict() for r in ctx.faults.rules()])
    if action == "kill":
        job_id = payload.get("job_id", "")
        if not ctx.runtime.kill(str(job_id), payload.get("reason") or "Job was killed (simulated node failure)"):
            raise HTTPError(409, f"Job {job_id!r} is not running")
        return JSONResponse({})
    if action == "requests":
        return JSONResponse(ctx.request_counts())
    raise HTTPError(404, f"Unknown emulator control {action!r}")


def build_app(ctx: Context) -> Starlette:
    routes = [
        *_api_jobs.routes(),
        *_api_buckets.routes(),
        Route("/_emulator/{action}", control, methods=["GET", "POST", "DELETE"]),
    ]
    app = Starlette(
        routes=routes,
        # The proxy first: a job's exposed port answers as the job's server does (no Date stamped, no
        # emulator faults), with its own auth rule.
        middleware=[
            Middleware(Proxy, ctx=ctx),
            Middleware(FrontDoor, ctx=ctx),
            Middleware(FaultMiddleware, faults=ctx.faults),
        ],
        exception_handlers={HTTPError: _http_error, HTTPException: _starlette_error, Exception: _unexpected},
    )
    app.state.ctx = ctx
    return app
