"""@remote calls through injected faults: every call gets its right value, and no call creates two jobs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import hfremote_on

import hfremote
from hfremote.emulator import Emulator

TOKEN = "hf_remote_faults_token_123456"


@hfremote.remote(stream_logs=False)
def square(x: int) -> dict[str, int]:
    return {"x": x, "square": x * x}


def _statuses(emulator: Emulator, method: str, path: str, since: int = 0) -> list[int]:
    return [status for _, m, p, status in emulator.requests()[since:] if m == method and p == path]


def _jobs_of(emulator: Emulator, future: Any) -> list[dict[str, Any]]:
    return emulator.jobs(labels=[("hfremote-run", future.run_id), ("hfremote-call", future.call)])


def _run_once(emulator: Emulator, x: int) -> Any:
    """Submit one call, check its value, and that exactly one job exists for it (the one the future has)."""
    future = square.submit(x)
    assert future.result(timeout=60) == {"x": x, "square": x * x}
    jobs = _jobs_of(emulator, future)
    assert [job["id"] for job in jobs] == [future.job_id]
    assert jobs[0]["status"]["stage"] == "COMPLETED"
    return future


@pytest.fixture
def seeded_emulator(tmp_path: Path) -> Iterator[Emulator]:
    """Like `remote_emulator`, with rate-based faults drawn from a fixed seed."""
    with Emulator(tmp_path / "seeded-state", token=TOKEN, seed=7) as emu, hfremote_on(emu):
        yield emu


@pytest.mark.parametrize(
    ("spec", "status"),
    [("503 POST /api/jobs/* count=2", 503), ("429 POST /api/jobs/* count=2 retry-after=1", 429)],
)
def test_refused_job_creation_is_retried_once_created(remote_emulator: Emulator, spec: str, status: int) -> None:
    ns = remote_emulator.user
    _run_once(remote_emulator, 1)  # warm: bucket, hardware and namespace are known
    since = len(remote_emulator.requests())
    rule = remote_emulator.faults.add(spec)
    _run_once(remote_emulator, 2)
    assert rule.fired == 2
    assert _statuses(remote_emulator, "POST", f"/api/jobs/{ns}", since) == [status, status, 200]
    assert len(remote_emulator.jobs()) == 2


def test_lost_answer_to_job_creation_does_not_create_a_second_job(remote_emulator: Emulator) -> None:
    ns = remote_emulator.user
    _run_once(remote_emulator, 1)
    since = len(remote_emulator.requests())
    # The job is created, then the connection is cut half-way through the answer.
    rule = remote_emulator.faults.add(f"drop POST /api/jobs/{ns} count=1")
    future = _run_once(remote_emulator, 3)
    assert rule.fired == 1
    assert _statuses(remote_emulator, "POST", f"/api/jobs/{ns}", since) == [200]  # one create, never retried
    assert future.info.labels is not None and future.info.labels["hfremote-call"] == "0-1"
    assert len(remote_emulator.jobs()) == 2


def test_lost_answer_on_a_fresh_process_does_not_create_a_second_job(remote_emulator: Emulator) -> None:
    # Same, on the very first call (nothing cached yet: whoami, hardware, bucket creation come first).
    rule = remote_emulator.faults.add(f"drop POST /api/jobs/{remote_emulator.user} count=1")
    _run_once(remote_emulator, 4)
    assert rule.fired == 1
    assert len(remote_emulator.jobs()) == 1


def test_flaky_listings_still_give_every_result(seeded_emulator: Emulator) -> None:
    ns = seeded_emulator.user
    _run_once(seeded_emulator, 1)
    since = len(seeded_emulator.requests())
    rule = seeded_emulator.faults.add("503 GET /api/jobs/* rate=0.3")
    futures = [square.submit(x) for x in (5, 6, 7)]
    assert [f.result(timeout=60)["square"] for f in futures] == [25, 36, 49]
    for future in futures:
        assert [job["id"] for job in _jobs_of(seeded_emulator, future)] == [future.job_id]
    assert len(seeded_emulator.jobs()) == 4
    assert rule.fired > 0
    assert 503 in _statuses(seeded_emulator, "GET", f"/api/jobs/{ns}", since)


def test_failing_bucket_reads_still_give_the_result(remote_emulator: Emulator) -> None:
    ns = remote_emulator.user
    future = _run_once(remote_emulator, 1)
    since = len(remote_emulator.requests())
    resolve = remote_emulator.faults.add(f"500 GET /buckets/{ns}/*/resolve/* count=2")
    _run_once(remote_emulator, 8)
    assert resolve.fired == 2
    reads = [s for _, m, p, s in remote_emulator.requests()[since:] if m == "GET" and "/resolve/" in p]
    assert reads[:3] == [500, 500, 200]
    # And through the Xet download, where plain downloads are not served.
    future._hub._plain_get = False
    since = len(remote_emulator.requests())
    paths_info = remote_emulator.faults.add(f"500 POST /api/buckets/{ns}/*/paths-info count=2")
    _run_once(remote_emulator, 7)
    assert paths_info.fired == 2
    assert _statuses(remote_emulator, "POST", f"/api/buckets/{ns}/hfremote/paths-info", since)[:3] == [500, 500, 200]
    assert len(remote_emulator.jobs()) == 3


def test_failing_xet_reads_still_give_the_result(remote_emulator: Emulator) -> None:
    future = _run_once(remote_emulator, 1)
    since = len(remote_emulator.requests())
    # Every read from Xet storage fails twice: the client's upload checks, the job's volume sync, the download.
    cas = remote_emulator.faults.add("503 GET /cas/* count=2")
    _run_once(remote_emulator, 9)
    assert cas.fired == 2
    reads = [s for _, m, p, s in remote_emulator.requests()[since:] if m == "GET" and p.startswith("/cas/")]
    assert reads.count(503) == 2
    # And once more with the faults aimed at the result's download itself (the Xet download).
    future._hub._plain_get = False
    cas = remote_emulator.faults.add("503 GET /cas/*/reconstructions/* count=2")
    _run_once(remote_emulator, 10)
    assert cas.fired == 2
    assert len(remote_emulator.jobs()) == 3


def test_watcher_survives_a_burst_of_rate_limits_on_listing(remote_emulator: Emulator) -> None:
    ns = remote_emulator.user
    _run_once(remote_emulator, 1)
    since = len(remote_emulator.requests())
    burst = remote_emulator.faults.add(f"429 GET /api/jobs/{ns} count=3 retry-after=1")
    start = time.monotonic()
    future = _run_once(remote_emulator, 11)
    assert burst.fired == 3
    assert _statuses(remote_emulator, "GET", f"/api/jobs/{ns}", since)[:3] == [429, 429, 429]
    assert time.monotonic() - start >= 2.5  # Retry-After was honoured, not hammered through
    # The watcher thread is still there for the next call, which completes without faults.
    _run_once(remote_emulator, 12)
    assert future.done()
    assert len(remote_emulator.jobs()) == 3
