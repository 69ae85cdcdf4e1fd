"""Exposed ports: each port a running job exposes is served through the emulator, as the Jobs proxy does.

    status.exposeUrls  ->  http://127.0.0.1:8787/_proxy/<job id>--<port>/
    any method, path and query below it  ->  http://127.0.0.1:<port>/... (the job's server)

The Hub's rule applies: a token with access to the job's namespace is needed, except for the job's
`portsPublic`; that token is not passed on to the job. Bodies stream both ways (uploads, SSE,
downloads) and WebSocket upgrades are relayed message by message. A browser may also use the host
form `http://<job id>--<port>.localhost:8787/`, which keeps absolute links of the served pages working.

Jobs share the host's network (the sandbox gives no network namespace: jobs need the package index
and the emulator), so an exposed port is a resource: a job waits in SCHEDULING while a running job
holds one of its ports (see `Runtime`), and exposing a port another running job holds is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import httpx
import websockets
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from ._server import Context

PREFIX = "/_proxy/"
_TARGET = re.compile(r"^([0-9a-f]{24})--([0-9]{1,5})$")
_HOST = re.compile(rb"^([0-9a-f]{24})--([0-9]{1,5})\.localhost(:[0-9]+)?$")
# Hop-by-hop headers (RFC 9110 7.6.1) and what the proxy sets itself are not forwarded.
_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"host",
}
_CONNECT_TIMEOUT = 10.0


def expose_urls(endpoint: str, job: dict[str, Any]) -> list[str] | None:
    """What `status.exposeUrls` says for a job (None when it exposes nothing, as on the Hub)."""
    ports = (job.get("expose") or {}).get("ports") or []
    return [f"{endpoint}{PREFIX}{job['id']}--{port}/" for port in ports] or None


def exposed_ports(job: dict[str, Any]) -> set[int]:
    return set((job.get("expose") or {}).get("ports") or [])


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class Proxy:
    """ASGI middleware in front of the API: requests for an exposed port go to the job, the rest on."""

    def __init__(self, app: ASGIApp, ctx: Context) -> None:
        self.app, self.ctx = app, ctx
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=_CONNECT_TIMEOUT), follow_redirects=False, trust_env=False
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self._target(scope) if scope["type"] in ("http", "websocket") else None
        if target is None:
            await self.app(scope, receive, send)
            return
        job_id, port, path = target
        if scope["type"] == "websocket" and (await receive())["type"] != "websocket.connect":
            return
        try:
            await self._check(scope, job_id, port)
        except _Refused as e:
            await self._refuse(scope, receive, send, e.status, e.message)
            return
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send, port, path, job_id)
        else:
            await self._http(scope, receive, send, port, path, job_id)

    @staticmethod
    def _target(scope: Scope) -> tuple[str, int, str] | None:
        """(job id, port, path on the job's server) when the request is for an exposed port."""
        path: str = scope["path"]
        if path.startswith(PREFIX):
            first, _, rest = path[len(PREFIX) :].partition("/")
            if m := _TARGET.match(first):
                return m.group(1), int(m.group(2)), "/" + rest
            return None
        host = next((v for k, v in scope["headers"] if k == b"host"), b"")
        if h := _HOST.match(host):
            return h.group(1).decode(), int(h.group(2)), path
        return None

    async def _check(self, scope: Scope, job_id: str, port: int) -> None:
        job = await run_in_threadpool(self.ctx.store.job, job_id)
        if job is None or port not in exposed_ports(job):
            raise _Refused(404, f"Job {job_id} does not expose port {port}")
        if port not in set(job["expose"].get("portsPublic") or []):
            authorization = next((v for k, v in scope["headers"] if k == b"authorization"), None)
            _, user = self.ctx.users.from_authorization(authorization)
            if user is None:
                raise _Refused(401, f"Port {port} of job {job_id} is private: send a token (Authorization: Bearer)")
            if not self.ctx.users.member(user, job["owner"]["name"]):
                raise _Refused(404, f"Job {job_id} does not expose port {port}")
        if job["status"]["stage"] != "RUNNING":
            raise _Refused(503, f"Job {job_id} is {job['status']['stage']}: its ports are reachable while it runs")

    def _headers(self, scope: Scope, job_id: str, port: int) -> list[tuple[bytes, bytes]]:
        out = []
        for key, value in scope["headers"]:
            if key in _HOP or key.startswith(b"sec-websocket-"):
                continue
            if key == b"authorization" and self.ctx.users.from_authorization(value)[1] is not None:
                continue  # the caller's Hub token never reaches the job
            out.append((key, value))
        prefix = f"{PREFIX}{job_id}--{port}" if scope["path"].startswith(PREFIX) else ""
        client = scope.get("client") or ("", 0)
        out += [
            (b"x-forwarded-for", str(client[0]).encode()),
            (b"x-forwarded-proto", b"http"),
            (b"x-forwarded-prefix", prefix.encode()),
        ]
        return out

    async def _http(self, scope: Scope, receive: Receive, send: Send, port: int, path: str, job_id: str) -> None:
        sent_whole = asyncio.Event()  # the request body is with the job: what comes next is a disconnect

        async def body() -> AsyncIterator[bytes]:
            try:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    yield message.get("body", b"")
                    if not message.get("more_body", False):
                        return
            finally:
                sent_whole.set()

        query = scope.get("query_string", b"")
        url = httpx.URL(f"http://127.0.0.1:{port}{path}" + (f"?{query.decode('latin-1')}" if query else ""))
        request = self._client.build_request(
            scope["method"], url, headers=self._headers(scope, job_id, port), content=body()
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as e:
            message = f"Nothing answers on port {port} of job {job_id} ({type(e).__name__})"
            await self._refuse(scope, receive, send, 502, message)
            return

        async def relay() -> None:
            headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP]
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            # Chunks as they come (server-sent events, long downloads): nothing is buffered whole.
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

        async def client_gone() -> None:
            await sent_whole.wait()
            while (await receive())["type"] != "http.disconnect":
                pass

        # A client that leaves an endless answer (an event stream) ends the relay, and the job's connection.
        tasks = [asyncio.ensure_future(relay()), asyncio.ensure_future(client_gone())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            relayed = tasks[0]
            error = relayed.exception() if relayed.done() and not relayed.cancelled() else None
            # The job's server hanging up mid-answer is not an error of ours: the client sees the cut.
            if isinstance(error, Exception) and not isinstance(error, httpx.HTTPError):
                raise error
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            await response.aclose()

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, port: int, path: str, job_id: str) -> None:
        query = scope.get("query_string", b"").decode("latin-1")
        url = f"ws://127.0.0.1:{port}{path}" + (f"?{query}" if query else "")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self._headers(scope, job_id, port)]
        subprotocols = list(scope.get("subprotocols") or [])
        try:
            upstream = await websockets.connect(
                url,
                additional_headers=headers,
                subprotocols=[websockets.Subprotocol(p) for p in subprotocols] or None,
                open_timeout=_CONNECT_TIMEOUT,
                max_size=None,
            )
        except (OSError, websockets.WebSocketException, asyncio.TimeoutError):
            await send({"type": "websocket.close", "code": 1011, "reason": f"nothing answers on port {port}"})
            return
        async with upstream:
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})

            async def downstream_to_job() -> None:
                while True:
                    message = await receive()
                    if message["type"] == "websocket.disconnect":
                        await upstream.close(message.get("code", 1000))
                        return
                    if message.get("bytes") is not None:
                        await upstream.send(message["bytes"])
                    elif message.get("text") is not None:
                        await upstream.send(message["text"])

            async def job_to_downstream() -> None:
                try:
                    async for data in upstream:
                        key = "bytes" if isinstance(data, bytes) else "text"
                        await send({"type": "websocket.send", key: data})
                except websockets.ConnectionClosed:
                    pass
                code = upstream.close_code or 1000
                with contextlib.suppress(Exception):  # the client may have gone already
                    await send({"type": "websocket.close", "code": code})

            tasks = [asyncio.ensure_future(downstream_to_job()), asyncio.ensure_future(job_to_downstream())]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(BaseException):
                        await task

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
        if scope["type"] == "websocket":
            # A refused upgrade is an HTTP answer (the websocket denial response extension), or a close.
            if "websocket.http.response" in (scope.get("extensions") or {}):
                await _send_json(send, status, message, prefix="websocket.http.response")
            else:
                await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
            return
        await _send_json(send, status, message)


async def _send_json(send: Callable[[Message], Any], status: int, message: str, prefix: str = "http.response") -> None:
    body = json.dumps({"error": message}).encode()
    safe = "".join(c if " " <= c <= "~" else "?" for c in message[:1000]).strip().encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-error-message", safe),
    ]
    await send({"type": f"{prefix}.start", "status": status, "headers": headers})
    await send({"type": f"{prefix}.body", "body": body})
