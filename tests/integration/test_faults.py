"""Injected faults against the real client: error answers, rate limits, dropped connections, killed jobs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import httpx2
import pytest
from helpers import poll, wait_stage
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from hfremote.emulator import Emulator

PRINT = ["python", "-c", "print('ok')"]


def _statuses(emulator: Emulator, method: str, path: str) -> list[int]:
    return [status for _, m, p, status in emulator.requests() if m == method and p == path]


def _assert_statuses(emulator: Emulator, method: str, path: str, expected: list[int]) -> None:
    # a request is recorded once its answer has gone out: the client may read it a moment earlier
    try:
        poll(lambda: _statuses(emulator, method, path) == expected, timeout=5, what="the request log")
    except AssertionError:
        assert _statuses(emulator, method, path) == expected


def test_429_with_retry_after_on_run_job(emulator: Emulator, api: HfApi, ns: str) -> None:
    rule = emulator.faults.add("429 POST /api/jobs/* count=1 retry-after=7")
    with pytest.raises(HfHubHTTPError) as info:
        api.run_job(image="python:3.12", command=PRINT, namespace=ns)
    assert info.value.response.status_code == 429
    assert info.value.response.headers["Retry-After"] == "7"
    assert "Injected fault" in str(info.value)
    assert emulator.jobs() == []  # the refused call created nothing
    assert rule.fired == 1

    job = api.run_job(image="python:3.12", command=PRINT, namespace=ns)
    assert [j["id"] for j in emulator.jobs()] == [job.id]
    assert wait_stage(api, job.id, ns).status.stage == "COMPLETED"
    _assert_statuses(emulator, "POST", f"/api/jobs/{ns}", [429, 200])


@pytest.mark.parametrize("status", [500, 503])
def test_listing_is_retried_through_server_errors(emulator: Emulator, api: HfApi, ns: str, status: int) -> None:
    job = api.run_job(image="python:3.12", command=PRINT, namespace=ns)
    rule = emulator.faults.add(f"{status} GET /api/jobs/{ns} count=2")
    # list_jobs pages through http_backoff: two failures cost 1 s + 2 s of client backoff
    assert [j.id for j in api.list_jobs(namespace=ns)] == [job.id]
    assert rule.fired == 2
    _assert_statuses(emulator, "GET", f"/api/jobs/{ns}", [status, status, 200])


def _inspect_outcomes(tmp_path: Path, seed: int) -> list[bool]:
    with Emulator(tmp_path, token="hf_seeded_token", seed=seed) as emu:
        api = HfApi(endpoint=emu.endpoint, token=emu.token)
        job = api.run_job(image="python:3.12", command=PRINT, namespace=emu.user)
        emu.faults.add("503 GET /api/jobs/*/* rate=0.5")
        outcomes = []
        for _ in range(40):
            try:
                assert api.inspect_job(job_id=job.id, namespace=emu.user).id == job.id
                outcomes.append(True)
            except HfHubHTTPError as e:
                assert e.response.status_code == 503
                outcomes.append(False)
        # listings do not match the rule's path (one segment after /api/jobs/)
        assert [j.id for j in api.list_jobs(namespace=emu.user)] == [job.id]
        return outcomes


def test_rate_based_faults_are_seeded(tmp_path: Path) -> None:
    outcomes = _inspect_outcomes(tmp_path / "one", seed=1)
    assert 0 < outcomes.count(True) < 40
    assert 0 < outcomes.count(False) < 40
    # the same seed gives the same sequence of failures
    assert _inspect_outcomes(tmp_path / "two", seed=1) == outcomes


def test_dropped_log_stream_is_resumed_without_duplicates(emulator: Emulator, api: HfApi, ns: str) -> None:
    rule = emulator.faults.add("drop GET /api/jobs/*/logs after=2 count=1")
    script = "import time\nfor i in range(10):\n    print(f'line {i}', flush=True)\n    time.sleep(0.2)"
    job = api.run_job(image="python:3.12", command=["python", "-c", script], namespace=ns)
    lines = list(api.fetch_job_logs(job_id=job.id, namespace=ns, follow=True))
    assert lines == [f"line {i}" for i in range(10)]
    assert rule.fired == 1
    poll(lambda: len(_statuses(emulator, "GET", f"/api/jobs/{ns}/{job.id}/logs")) >= 2, what="a reconnection")
    assert wait_stage(api, job.id, ns).status.stage == "COMPLETED"


def test_dropped_plain_answer_is_a_transport_error(emulator: Emulator, api: HfApi) -> None:
    emulator.faults.add("drop GET /api/jobs/hardware count=1")
    with pytest.raises(httpx2.TransportError):
        api.list_jobs_hardware()
    assert any(h.name == "a100-large" for h in api.list_jobs_hardware())


def test_killed_job_ends_in_error(emulator: Emulator, api: HfApi, ns: str) -> None:
    rule = emulator.faults.add("kill count=1 delay=0.3")
    job = api.run_job(image="python:3.12", command=["python", "-c", "import time; time.sleep(60)"], namespace=ns)
    info = wait_stage(api, job.id, ns)
    assert info.status.stage == "ERROR"
    assert "simulated node failure" in (info.status.message or "")
    assert rule.fired == 1
    # the rule is spent: the next job runs undisturbed
    other = api.run_job(image="python:3.12", command=PRINT, namespace=ns)
    assert wait_stage(api, other.id, ns).status.stage == "COMPLETED"


def test_killed_attempt_is_retried(emulator: Emulator, api: HfApi, ns: str) -> None:
    emulator.faults.add("kill count=1 delay=0.3")
    script = "import time; time.sleep(1); print('finished', flush=True)"
    job = api.run_job(image="python:3.12", command=["python", "-c", script], attempts=2, namespace=ns)
    info = wait_stage(api, job.id, ns)
    assert info.status.stage == "COMPLETED", info.status.message
    logs = list(api.fetch_job_logs(job_id=job.id, namespace=ns))
    assert logs[-1] == "finished"
    assert logs.count("finished") == 1  # the first attempt died before printing
    assert any("simulated node failure" in line and "retrying (2 of 2)" in line for line in logs), logs


def test_control_routes(emulator: Emulator, api: HfApi, ns: str) -> None:
    headers = {"Authorization": f"Bearer {emulator.token}"}
    with httpx.Client(base_url=emulator.endpoint, headers=headers, timeout=30) as http:
        assert httpx.get(f"{emulator.endpoint}/_emulator/faults").status_code == 401  # no token

        added = http.post("/_emulator/faults", json={"spec": "503 GET /api/jobs/hardware count=1"})
        assert added.status_code == 200, added.text
        assert added.json()["kind"] == "503" and added.json()["count"] == 1
        with pytest.raises(HfHubHTTPError) as info:
            api.list_jobs_hardware()
        assert info.value.response.status_code == 503
        assert api.list_jobs_hardware()

        http.post("/_emulator/faults", json={"spec": "500 GET /api/jobs/hardware"})
        rules = http.get("/_emulator/faults").json()
        assert [(r["kind"], r["fired"]) for r in rules] == [("503", 1), ("500", 0)]
        assert http.post("/_emulator/faults", json={"spec": "418 GET *"}).status_code == 400
        assert http.delete("/_emulator/faults").status_code == 200
        assert http.get("/_emulator/faults").json() == []
        assert api.list_jobs_hardware()

        before = datetime.now(timezone.utc)
        advanced = http.post("/_emulator/advance", json={"seconds": 60})
        assert advanced.status_code == 200, advanced.text
        assert datetime.fromisoformat(advanced.json()["now"]) >= before + timedelta(seconds=60)
        assert advanced.json()["fired"] == []
        assert http.post("/_emulator/advance", json={"seconds": -1}).status_code == 400

        script = "import time; print('up', flush=True); time.sleep(60)"
        job = api.run_job(image="python:3.12", command=["python", "-c", script], namespace=ns)
        poll(lambda: "up" in emulator.ctx.logs.tail(job.id, 10), what="the job to start")
        killed = http.post("/_emulator/kill", json={"job_id": job.id})
        assert killed.status_code == 200, killed.text
        info = wait_stage(api, job.id, ns)
        assert info.status.stage == "ERROR"
        assert "simulated node failure" in (info.status.message or "")
        # a job that is no longer running cannot be killed
        assert http.post("/_emulator/kill", json={"job_id": job.id}).status_code == 409
