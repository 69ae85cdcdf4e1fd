"""Job log lines, appended as the job writes them and replayed whole on every connection.

Each job's log is a JSON-lines file whose lines are exactly the SSE payloads the Hub sends
(`{"data": ..., "timestamp": ...}`); a per-job counter lets streams wait for new lines cheaply.
"""

from __future__ import annotations

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
        self._counts: dict[str, int] = {}

    def _path(self, job_id: str) -> Path:
        return self._root / f"{job_id}.jsonl"

    def append(self, job_id: str, text: str) -> None:
        line = json.dumps({"data": text, "timestamp": iso(self._clock.now())}, ensure_ascii=False)
        with self._lock, self._path(job_id).open("a", encoding="utf-8") as f:
            f.write(line + "\n")
            self._counts[job_id] = self._counts.get(job_id, 0) + 1

    def touch(self, job_id: str) -> None:
        """Wake the streams waiting on this log without writing a line (the job has ended)."""
        with self._lock:
            self._counts[job_id] = self._counts.get(job_id, 0) + 1

    def version(self, job_id: str) -> int:
        """Grows whenever a line is appended; streams poll it instead of re-reading the file."""
        return self._counts.get(job_id, 0)

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
