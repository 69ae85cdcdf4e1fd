"""Faults on demand, for reliability tests: error answers, rate limits, dropped streams, killed jobs.

A rule names a kind, the requests it applies to (method and a path glob) and how often it fires: at a
`rate` (a probability per matching request) and/or for the next `count` matching requests.

    Faults.parse("429 POST /api/jobs/* count=3 retry-after=1")
    Faults.parse("503 GET /api/jobs/* rate=0.1")
    Faults.parse("drop GET /api/jobs/*/logs after=2")     # cut the stream after 2 events
    Faults.parse("kill count=1 delay=0.5")                # kill the next job 0.5 s after it starts
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import random
import threading
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

KINDS = ("400", "429", "500", "502", "503", "504", "drop", "kill")  # 400: a refusal the client must survive
INTERNAL = "hfremote.internal"  # ASGI scope key: a request the emulator sent itself, never faulted
_METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH")


@dataclass
class FaultRule:
    kind: str
    path: str = "*"
    method: str | None = None
    rate: float | None = None
    count: int | None = None
    retry_after: int = 1
    after: int = 1  # drop: body chunks sent before the connection is cut
    delay: float = 0.5  # kill: seconds after the job starts
    fired: int = 0

    def __post_init__(self) -> None:
        # Rules also arrive as JSON (`POST /_emulator/faults`): a wrong type must be refused here, not
        # break every later request when the rule is matched.
        def number(name: str, kind: type, low: float, high: float, optional: bool = False) -> None:
            value = getattr(self, name)
            if value is None and optional:
                return
            if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
                raise ValueError(f"fault option {name!r} must be {'a number' if kind is float else 'an integer'}")
            if not (math.isfinite(value) and low <= value <= high):
                raise ValueError(f"fault option {name!r} must be between {low} and {high}, got {value}")

        for name in ("kind", "path"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"fault option {name!r} must be a string")
        if self.method is not None and self.method not in _METHODS:
            raise ValueError(f"fault method must be one of {', '.join(_METHODS)}")
        number("rate", float, 0, 1, optional=True)
        number("count", int, 0, 1 << 31, optional=True)
        number("retry_after", int, 0, 86400)
        number("after", int, 0, 1 << 31)
        number("delay", float, 0, 86400)
        number("fired", int, 0, 1 << 62)
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.rate is None and self.count is None:
            self.rate = 1.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Faults:
    def __init__(self, seed: int | None = None) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    @staticmethod
    def parse(spec: str) -> FaultRule:
        words = spec.split()
        if not words:
            raise ValueError("empty fault spec")
        options: dict[str, Any] = {"kind": words[0].lower()}
        for word in words[1:]:
            if word.upper() in _METHODS and "method" not in options:
                options["method"] = word.upper()
            elif "=" in word:
                key, _, value = word.partition("=")
                key = key.replace("-", "_")
                casts = {"rate": float, "count": int, "retry_after": int, "after": int, "delay": float}
                if key not in casts:
                    raise ValueError(f"unknown fault option {key!r} in {spec!r}; use {', '.join(casts)}")
                options[key] = casts[key](value)
            else:
                options["path"] = word
        return FaultRule(**options)

    def add(self, rule: FaultRule | str) -> FaultRule:
        rule = self.parse(rule) if isinstance(rule, str) else rule
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def match(self, method: str, path: str, kinds: tuple[str, ...] = KINDS) -> FaultRule | None:
        with self._lock:
            for rule in self._rules:
                if rule.kind not in kinds or (rule.method and rule.method != method):
                    continue
                if not fnmatch.fnmatchcase(path, rule.path):
                    continue
                if rule.count is not None and rule.fired >= rule.count:
                    continue
                if rule.rate is not None and self._random.random() >= rule.rate:
                    continue
                rule.fired += 1
                return rule
        return None


class _Dropped(Exception):
    """Raised inside the response to make the server cut the connection mid-way."""


class _QuietDrops(logging.Filter):
    """The server logs every exception from the app as an error; an injected drop is not one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _Dropped))


class FaultMiddleware:
    def __init__(self, app: ASGIApp, faults: Faults) -> None:
        self.app, self.faults = app, faults
        # uvicorn logs the cut, and so does the app's catch-all handler (as an "internal error")
        for server_log in (logging.getLogger("uvicorn.error"), logging.getLogger("hfremote.emulator")):
            if not any(isinstance(f, _QuietDrops) for f in server_log.filters):
                server_log.addFilter(_QuietDrops())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_emulator") or scope.get(INTERNAL):
            await self.app(scope, receive, send)
            return
        rule = self.faults.match(scope["method"], scope["path"], tuple(k for k in KINDS if k != "kill"))
        if rule is None:
            await self.app(scope, receive, send)
        elif rule.kind == "drop":
            await self._drop(scope, receive, send, rule.after)
        else:
            status = int(rule.kind)
            message = f"Injected fault: {status} for {scope['method']} {scope['path']}"
            headers = [(b"content-type", b"application/json"), (b"x-error-message", message.encode())]
            if status == 429:
                headers.append((b"retry-after", str(rule.retry_after).encode()))
            body = json.dumps({"error": message}).encode()
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})

    async def _drop(self, scope: Scope, receive: Receive, send: Send, after: int) -> None:
        sent = 0

        async def cutting_send(message: Message) -> None:
            nonlocal sent
            if message["type"] == "http.response.body":
                if sent >= after:
                    raise _Dropped
                body = message.get("body", b"")
                if not message.get("more_body", False) and sent + 1 >= after and len(body) > 1:
                    # a plain (non-streamed) answer: send half of it, then cut
                    await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
                    raise _Dropped
                sent += 1
            await send(message)

        await self.app(scope, receive, cutting_send)  # _Dropped propagates: the server cuts the connection
