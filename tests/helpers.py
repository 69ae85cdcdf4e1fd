"""Helpers for tests: polls with a deadline instead of sleeps, subprocesses pointed at an emulator, a user exception."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx2
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


class _PatientTransport(httpx2.HTTPTransport):
    """A transport whose `close()` lets the requests in flight finish first (then closes)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._busy = 0
        self._closing = False

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        with self._lock:
            self._busy += 1
        try:
            response = super().handle_request(request)
        except BaseException:
            self._done()
            raise
        response.stream = _Counted(response.stream, self._done)  # type: ignore[arg-type]
        return response

    def _done(self) -> None:
        with self._lock:
            self._busy -= 1
            now = self._closing and self._busy == 0
        if now:
            super().close()

    def close(self) -> None:
        with self._lock:
            self._closing = True
            now = self._busy == 0
        if now:
            super().close()


class _Counted(httpx2.SyncByteStream):
    def __init__(self, stream: Any, done: Callable[[], None]) -> None:
        self._stream, self._done, self._closed = stream, done, False

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._stream.close()
        finally:
            self._done()


def patient_client() -> httpx2.Client:
    """huggingface_hub's default client (its `default_client_factory`), on a transport whose close waits
    for the requests in flight: huggingface_hub closes its shared client when one thread's connection is
    refused, and the other threads' requests then fail with `ReadError: [Errno 9] Bad file descriptor`."""
    from huggingface_hub.utils._http import hf_request_event_hook

    return httpx2.Client(
        event_hooks={"request": [hf_request_event_hook]},
        follow_redirects=True,
        timeout=None,
        transport=_PatientTransport(),
    )


def engine_lets_go() -> None:
    """Make hfremote's engine (if this process has one) drop every run, lease and owned run it tracks:
    their futures stay as they are, nothing is looked at, renewed or cancelled for them any more."""
    from hfremote import _engine

    for engine in _engine._ENGINE:
        with engine._lock:
            engine._runs.clear()
            engine._leases.clear()
            engine._owned_runs.clear()


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


def start_script(emulator: Emulator, tmp_path: Path, name: str, source: str) -> subprocess.Popen[str]:
    """Write `source` to `tmp_path/name` and start it, as a user's script, against `emulator` (pipes open)."""
    script = tmp_path / name
    script.write_text(source)
    return subprocess.Popen(
        [sys.executable, str(script)],
        env=subprocess_env(emulator, tmp_path / "hf-home"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_script(
    emulator: Emulator, tmp_path: Path, name: str, source: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """`start_script`, run to its end (bounded by `timeout`), its output captured."""
    proc = start_script(emulator, tmp_path, name, source)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
