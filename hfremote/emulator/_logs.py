"""Job log lines, appended as the job writes them and replayed whole on every connection.

Each job's log is a JSON-lines file whose lines are exactly the SSE payloads the Hub sends
(`{"data": ..., "timestamp": ...}`); following streams are woken by each new line and by the job's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from pathlib import Path

from ._util import Clock, iso


class LogBook:
    def __init__(self, root: Path, clock: Clock) -> None:
        self._root = root
        root.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def _path(self, job_id: str) -> Path:
        return self._root / f"{job_id}.jsonl"

    def append(self, job_id: str, text: str) -> None:
        line = json.dumps({"data": text, "timestamp": iso(self._clock.now())}, ensure_ascii=False)
        with self._lock, self._path(job_id).open("a", encoding="utf-8") as f:
            f.write(line + "\n")

        self._notify(job_id)

    def touch(self, job_id: str) -> None:
        """Wake the streams waiting on this log without writing a line (the job has ended)."""
        self._notify(job_id)

    # Streams run on the server's event loop; lines arrive from job threads.
    def subscribe(self, job_id: str) -> asyncio.Event:
        """An event set (on the calling event loop) whenever this log changes."""
        event = asyncio.Event()
        with self._lock:
            self._waiters.setdefault(job_id, []).append((asyncio.get_running_loop(), event))
        return event

    def unsubscribe(self, job_id: str, event: asyncio.Event) -> None:
        with self._lock:
            waiters = [w for w in self._waiters.get(job_id, []) if w[1] is not event]
            if waiters:
                self._waiters[job_id] = waiters
            else:
                self._waiters.pop(job_id, None)

    def _notify(self, job_id: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(job_id, []))
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(event.set)

    def read(self, job_id: str, offset: int = 0) -> tuple[list[str], int]:
        """The SSE payloads written after byte `offset`, and the offset to read from next time."""
        try:
            with self._path(job_id).open("rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return [], offset
        end = data.rfind(b"\n") + 1  # a line being written right now is left for the next read
        return data[:end].decode("utf-8").splitlines(), offset + end

    def events(self, job_id: str) -> list[str]:
        return self.read(job_id)[0]

    def tail(self, job_id: str, lines: int) -> list[str]:
        return [json.loads(e)["data"] for e in self.events(job_id)[-lines:]] if lines > 0 else []
