"""Where jobs run: the Hub, an endpoint from HF_ENDPOINT, or an embedded emulator.

| situation                                             | endpoint                                  |
|-------------------------------------------------------|-------------------------------------------|
| `configure(backend="local")` / HFREMOTE_BACKEND=local | an emulator started in this process       |
| `HF_ENDPOINT` is set                                  | that endpoint, with the token found       |
| a Hugging Face token is found                         | the Hub                                   |
| neither                                               | an embedded emulator, with a notice       |
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import Any

from ._hub import Hub
from .errors import OptionsError

HUB_ENDPOINT = "https://huggingface.co"
_lock = threading.Lock()
_settings: dict[str, Any] = {}
_hub: Hub | None = None
_emulator: Any = None


def configure(
    *,
    backend: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    poll_interval: float | None = None,
    unreachable_timeout: float | None = None,
    lease_seconds: float | None = None,
) -> None:
    """Choose where jobs run, and how runs are watched, for the rest of this process.

    Each call changes only the settings it names (`configure(lease_seconds=60)` keeps the backend);
    `configure()` with no arguments puts every setting back to its default.

    backend: "hf" (the Hub or `endpoint`), "local" (an embedded emulator), or None (decide as above).
    unreachable_timeout: seconds without an answer from the endpoint after which the pending futures of
    a run fail with `BackendError` instead of waiting (default 300).
    lease_seconds: how long the jobs of a run go on after their client stopped renewing the run's lease
    (it was killed); detached runs have no lease (default 120).
    """
    global _hub
    if backend not in (None, "hf", "local"):
        raise OptionsError(f"backend={backend!r}: use 'hf' (Hugging Face Jobs) or 'local' (the embedded emulator)")
    for name, value in (
        ("poll_interval", poll_interval),
        ("unreachable_timeout", unreachable_timeout),
        ("lease_seconds", lease_seconds),
    ):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
            raise OptionsError(f"{name}={value!r} must be a positive number of seconds")
        if value is not None and value == float("inf"):
            raise OptionsError(f"{name}={value!r} must be a finite number of seconds")
    given = {
        "backend": backend,
        "endpoint": endpoint,
        "token": token,
        "poll_interval": poll_interval,
        "unreachable_timeout": unreachable_timeout,
        "lease_seconds": lease_seconds,
    }
    with _lock:
        if all(value is None for value in given.values()):
            _settings.clear()
        _settings.update({name: value for name, value in given.items() if value is not None})
        _hub = None


def poll_interval(hub: Hub) -> float:
    """Seconds between two looks at a run's jobs: the Hub's API is rate-limited, the emulator is not."""
    chosen = _settings.get("poll_interval")
    return float(chosen) if chosen else (0.02 if hub.is_emulator else 2.0)


def unreachable_timeout() -> float:
    """Seconds a run's endpoint may stay unreachable before its pending futures fail."""
    return float(_settings.get("unreachable_timeout") or 300.0)


def lease_seconds() -> float:
    """Seconds a run's jobs go on once their client stopped renewing its lease."""
    return float(_settings.get("lease_seconds") or 120.0)


def current_hub() -> Hub:
    global _hub
    with _lock:
        if _hub is None:
            _hub = _resolve()
            _hub.give_up_after = unreachable_timeout()
        return _hub


def _resolve() -> Hub:
    backend = _settings.get("backend") or os.environ.get("HFREMOTE_BACKEND") or None
    if backend not in (None, "hf", "local"):
        raise OptionsError(f"HFREMOTE_BACKEND={backend!r}: use 'hf' or 'local'")
    if backend == "local":
        return _embedded("HFREMOTE_BACKEND=local")
    from huggingface_hub import get_token

    token = _settings.get("token") or get_token()
    endpoint = _settings.get("endpoint") or os.environ.get("HF_ENDPOINT")
    if endpoint:
        return Hub(endpoint, token, is_emulator=not endpoint.rstrip("/").endswith("huggingface.co"))
    if token:
        return Hub(HUB_ENDPOINT, token)
    if backend == "hf":
        raise OptionsError("backend='hf' needs a Hugging Face token: run `hf auth login` or set HF_TOKEN")
    return _embedded("no Hugging Face token found")


def _embedded(reason: str) -> Hub:
    global _emulator
    from .emulator import Emulator

    if _emulator is None:
        _emulator = Emulator(max_running=max(2, os.cpu_count() or 2))
        _emulator.start()
        atexit.register(_emulator.stop)
        print(
            f"hfremote: {reason}; running jobs on the local emulator at {_emulator.endpoint} "
            "(set HF_TOKEN to run on Hugging Face Jobs)",
            file=sys.stderr,
        )
    return Hub(_emulator.endpoint, _emulator.token, is_emulator=True)
