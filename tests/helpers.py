"""Helpers for tests: polls with a deadline instead of sleeps, subprocesses pointed at an emulator, a user exception."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from huggingface_hub import HfApi

from hfremote.emulator import Emulator


@contextlib.contextmanager
def hfremote_on(emulator: Emulator) -> Iterator[Emulator]:
    """hfremote pointed at `emulator` for the block, and back to its default afterwards."""
    import hfremote

    hfremote.configure(endpoint=emulator.endpoint, token=emulator.token)
    try:
        yield emulator
    finally:
        hfremote.configure()


def poll(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Call `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def processes_with(marker: str) -> list[int]:
    """Host pids of the processes whose command line holds `marker` (jobs in the sandbox see other pids)."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if process.status() != psutil.STATUS_ZOMBIE and any(
                marker in part for part in process.info["cmdline"] or []
            ):
                found.append(process.pid)
    return found


def wait_stage(
    api: HfApi,
    job_id: str,
    namespace: str,
    stages: tuple[str, ...] = ("COMPLETED", "ERROR", "CANCELED"),
    timeout: float = 60.0,
) -> Any:
    def check() -> Any:
        info = api.inspect_job(job_id=job_id, namespace=namespace)
        return info if info.status.stage in stages else None

    return poll(check, timeout, what=f"job {job_id} to reach {stages}")


def subprocess_env(emulator: Emulator, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HFREMOTE_"))}
    env.update(
        {
            "HF_ENDPOINT": emulator.endpoint,
            "HF_TOKEN": emulator.token,
            "HF_HOME": str(home),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "HF_HUB_DISABLE_EXPERIMENTAL_WARNING": "1",
            "HF_XET_TELEMETRY_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


class Lines:
    """Reads a pipe on a thread, so the test can wait for a line with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        for line in self.lines:
            if m := re.search(pattern, line):
                return m
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s:\n" + "\n".join(self.lines))
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the stream ended without a line matching {pattern!r}:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if m := re.search(pattern, line):
                return m

    def rest(self, timeout: float = 30.0) -> str:
        """Everything until the stream closes."""
        self._thread.join(timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return "\n".join(self.lines)


class MyError(ValueError):
    """The user's own exception class, with state of its own."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, code)
        self.message, self.code = message, code

    def __str__(self) -> str:
        return f"{self.message} (code {self.code})"
