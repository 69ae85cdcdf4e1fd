"""Job processes on the host: their folders (slots), signalling their process groups, ending what a dead
emulator left, and sampling their CPU and memory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psutil

_KILL_GRACE = 1.0


def slots_root(state: Path) -> Path:
    """The user's cache (shared slots), or the emulator's state directory where that cannot be written."""
    try:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        shared = Path(cache) / "hfremote" / "emulator-slots"
        shared.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=shared):
            return shared
    except (OSError, RuntimeError):  # no writable cache, or no home directory
        own = state / "slots"
        own.mkdir(parents=True, exist_ok=True)
        return own


def kill_group(process: subprocess.Popen[bytes], graceful: bool) -> None:
    """Signal the whole process group: `uv run` starts python as a child, and both must go."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if graceful:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(_KILL_GRACE)
                # the leader is gone; make sure nothing it started lingers
                os.killpg(process.pid, signal.SIGKILL)
                return
            except subprocess.TimeoutExpired:
                pass
        os.killpg(process.pid, signal.SIGKILL)


def end_leftover(pid: int, started: float) -> None:
    """Kill the process group a previous emulator recorded, if that process is still the same one."""
    try:
        if abs(psutil.Process(pid).create_time() - started) > 0.01:
            return  # the pid was reused by another program
    except psutil.Error:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


_UV_CACHE: list[str] = []


def uv_cache_dir() -> str:
    if not _UV_CACHE:
        from uv import find_uv_bin

        out = subprocess.run([find_uv_bin(), "cache", "dir"], capture_output=True, text=True, check=False)
        _UV_CACHE.append(out.stdout.strip() or str(Path.home() / ".cache" / "uv"))
    return _UV_CACHE[0]


def human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def measure(pid: int, known: dict[int, psutil.Process], total_memory: int, job_id: str) -> dict[str, Any]:
    """One metrics sample of a job's process tree, as the platform streams it.

    `known` keeps the psutil objects between samples (cpu_percent measures since its last call).
    """
    root = psutil.Process(pid)
    cpu = rss = 0.0
    seen = {}
    for proc in [root, *root.children(recursive=True)]:
        kept = known.get(proc.pid, proc)
        seen[proc.pid] = kept
        with contextlib.suppress(psutil.Error):
            cpu += kept.cpu_percent(None)
            rss += kept.memory_info().rss
    known.clear()
    known.update(seen)
    cores = os.cpu_count() or 1
    return {
        "cpu_usage_pct": round(cpu / cores, 1),
        "cpu_millicores": int(cpu * 10),
        "memory_used_bytes": int(rss),
        "memory_total_bytes": total_memory,
        "rx_bps": 0,
        "tx_bps": 0,
        "gpus": {},
        "replica": job_id[-5:],
    }
