"""Job log lines, appended as the job writes them and replayed whole on every connection.

Each job's log is a JSON-lines file whose lines are exactly the SSE payloads the Hub sends
(`{"data": ..., "timestamp": ...}`); following streams are woken by each new line and by the job's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
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

    def read(self, job_id: str, offset: int = 0, limit: int = 1 << 20) -> tuple[list[str], int]:
        """The SSE payloads written after byte `offset` (about `limit` bytes of them at most, but always
        whole lines), and the offset to read from next time: a reader of a big log holds one block."""
        try:
            with self._path(job_id).open("rb") as f:
                f.seek(offset)
                data = f.read(limit)
                while data and not data.endswith(b"\n") and (more := f.read(limit)):
                    data += more  # a partial last line: read on until a line ends (or the file does)
                    if b"\n" in more:
                        break
        except FileNotFoundError:
            return [], offset
        end = data.rfind(b"\n") + 1  # a line being written right now is left for the next read
        return data[:end].decode("utf-8").splitlines(), offset + end

    def read_tail(self, job_id: str, lines: int, block: int = 1 << 16) -> tuple[list[str], int]:
        """The last `lines` complete payloads and the offset after them, reading backwards: O(tail), not O(log)."""
        pos, data = 0, b""
        try:
            with self._path(job_id).open("rb") as f:
                pos = os.fstat(f.fileno()).st_size
                # lines + 1 newlines: the text before the first may be the end of a longer line
                while pos > 0 and data.count(b"\n") <= lines:
                    step = min(block, pos)
                    pos -= step
                    f.seek(pos)
                    data = f.read(step) + data
        except FileNotFoundError:
            return [], 0
        end = data.rfind(b"\n") + 1
        complete = data[:end]
        events = complete.decode("utf-8", errors="replace").splitlines()
        if pos > 0:
            events = events[1:]  # the first line read may be the end of a longer one
        return (events[-lines:] if lines > 0 else []), pos + end

    def events(self, job_id: str) -> list[str]:
        out: list[str] = []
        offset = 0
        while True:
            events, offset = self.read(job_id, offset)
            if not events:
                return out
            out += events

    def tail(self, job_id: str, lines: int) -> list[str]:
        return [json.loads(e)["data"] for e in self.read_tail(job_id, lines)[0]]
