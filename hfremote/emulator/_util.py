"""Small shared pieces of the emulator: ids, timestamps, the clock and the HTTP error type."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any


def new_id() -> str:
    """A 24-hex id, the shape the Hub uses for jobs and scheduled jobs."""
    return os.urandom(12).hex()


def iso(dt: datetime) -> str:
    """A Z-terminated UTC timestamp: huggingface_hub's parse_datetime refuses `+00:00`."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Clock:
    """Wall time plus an offset that tests move forward, so cron schedules fire without real waiting.

    Only the emulator's notion of "now" moves; timeouts and durations measured with `time.monotonic`
    are unaffected, so advancing the clock never kills a running job.
    """

    def __init__(self, offset: float = 0.0) -> None:
        self._offset = offset
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return datetime.fromtimestamp(time.time() + self._offset, timezone.utc)

    @property
    def offset(self) -> float:
        return self._offset

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("the emulator clock only moves forward")
        with self._lock:
            self._offset += seconds
        return self.now()

    def set(self, when: datetime) -> datetime:
        return self.advance(max(0.0, (when - self.now()).total_seconds()))


def add(dt: datetime, seconds: float) -> datetime:
    return dt + timedelta(seconds=seconds)


class HTTPError(Exception):
    """An error answered to the client as `{"error": message}` with the given status."""

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None, body: dict[str, object] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.body = body


def json_object(body: bytes, what: str) -> Any:
    """Parse a JSON body, answering 400 (not 500) when it is not JSON."""
    try:
        return json.loads(body) if body.strip() else {}
    except ValueError as e:
        raise bad_request(f"Malformed JSON in {what}: {e}") from None


def bad_request(message: str) -> HTTPError:
    return HTTPError(400, message)


def not_found(message: str, code: str | None = None) -> HTTPError:
    return HTTPError(404, message, {"X-Error-Code": code} if code else None)
