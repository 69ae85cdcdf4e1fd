"""Helpers for tests: polls with a deadline instead of sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from huggingface_hub import HfApi


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
