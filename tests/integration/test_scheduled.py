"""Scheduled jobs through the real huggingface_hub client; time moves with `Emulator.advance`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from helpers import poll, wait_stage
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from hfremote.emulator import Emulator

PRINT = ["python", "-c", "print('scheduled hello')"]
SLEEP = ["python", "-c", "import time; print('started', flush=True); time.sleep(60)"]


def _now(emulator: Emulator) -> datetime:
    return emulator.ctx.clock.now()


def _next_boundary(when: datetime, minutes: int) -> datetime:
    """The first time strictly after `when` whose minute is a multiple of `minutes` (second 0)."""
    floor = when.replace(minute=when.minute - when.minute % minutes, second=0, microsecond=0)
    return floor + timedelta(minutes=minutes)


def test_create_list_inspect_suspend_resume_delete(api: HfApi, emulator: Emulator, ns: str) -> None:
    before = _now(emulator)
    sched = api.create_scheduled_job(
        image="python:3.12", command=PRINT, schedule="@hourly", labels={"team": "ml"}, namespace=ns
    )
    after = _now(emulator)
    assert sched.schedule == "@hourly"
    assert sched.suspend is False
    assert sched.job_spec.docker_image == "python:3.12"
    assert sched.job_spec.command == PRINT
    assert sched.job_spec.labels is not None and sched.job_spec.labels["team"] == "ml"
    assert sched.status.next_job_run_at in {_next_boundary(before, 60), _next_boundary(after, 60)}

    listed = api.list_scheduled_jobs(namespace=ns)
    assert [s.id for s in listed] == [sched.id]
    assert [s.id for s in api.list_scheduled_jobs(labels={"team": "ml"}, namespace=ns)] == [sched.id]
    assert api.list_scheduled_jobs(labels={"team": "other"}, namespace=ns) == []

    info = api.inspect_scheduled_job(scheduled_job_id=sched.id, namespace=ns)
    assert info.id == sched.id
    assert info.status.next_job_run_at is not None
    assert info.status.next_job_run_at > _now(emulator)
    assert info.status.last_job is None

    api.suspend_scheduled_job(scheduled_job_id=sched.id, namespace=ns)
    suspended = api.inspect_scheduled_job(scheduled_job_id=sched.id, namespace=ns)
    assert suspended.suspend is True
    assert suspended.status.next_job_run_at is None

    api.resume_scheduled_job(scheduled_job_id=sched.id, namespace=ns)
    resumed = api.inspect_scheduled_job(scheduled_job_id=sched.id, namespace=ns)
    assert resumed.suspend is False
    assert resumed.status.next_job_run_at is not None and resumed.status.next_job_run_at > _now(emulator)

    api.delete_scheduled_job(scheduled_job_id=sched.id, namespace=ns)
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.inspect_scheduled_job(scheduled_job_id=sched.id, namespace=ns)
    assert excinfo.value.response.status_code == 404
    assert api.list_scheduled_jobs(namespace=ns) == []


def test_update_schedule_and_cron_next_run(api: HfApi, emulator: Emulator, ns: str) -> None:
    before = _now(emulator)
    sched = api.create_scheduled_job(image="python:3.12", command=PRINT, schedule="*/5 * * * *", namespace=ns)
    after = _now(emulator)
    assert sched.status.next_job_run_at in {_next_boundary(before, 5), _next_boundary(after, 5)}

    before = _now(emulator)
    updated = api.update_scheduled_job_schedule(scheduled_job_id=sched.id, schedule="@daily", namespace=ns)
    after = _now(emulator)
    assert updated.schedule == "@daily"
    midnights = {
        datetime.combine(t.date() + timedelta(days=1), datetime.min.time(), tzinfo=t.tzinfo) for t in (before, after)
    }
    assert updated.status.next_job_run_at in midnights
    again = api.inspect_scheduled_job(scheduled_job_id=sched.id, namespace=ns)
    assert again.schedule == "@daily" and again.status.next_job_run_at == updated.status.next_job_run_at
    assert again.job_spec.command == PRINT and again.suspend is False


def test_trigger_runs_once_and_refuses_concurrent_runs(api: HfApi, emulator: Emulator, ns: str) -> None:
    quick = api.create_scheduled_job(image="python:3.12", command=PRINT, schedule="@daily", namespace=ns)
    job = api.trigger_scheduled_job(scheduled_job_id=quick.id, namespace=ns)
    assert job.initiator is not None
    assert (job.initiator.type, job.initiator.id) == ("scheduled-job", quick.id)
    assert wait_stage(api, job.id, ns).status.stage == "COMPLETED"
    assert list(api.fetch_job_logs(job_id=job.id, namespace=ns)) == ["scheduled hello"]
    last = api.inspect_scheduled_job(scheduled_job_id=quick.id, namespace=ns).status.last_job
    assert last is not None and last.id == job.id

    slow = api.create_scheduled_job(
        image="python:3.12", command=SLEEP, schedule="@daily", concurrency=False, namespace=ns
    )
    first = api.trigger_scheduled_job(scheduled_job_id=slow.id, namespace=ns)
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.trigger_scheduled_job(scheduled_job_id=slow.id, namespace=ns)
    assert excinfo.value.response.status_code == 409
    assert "concurrency" in str(excinfo.value)
    api.cancel_job(job_id=first.id, namespace=ns)
    assert wait_stage(api, first.id, ns).status.stage == "CANCELED"
    second = api.trigger_scheduled_job(scheduled_job_id=slow.id, namespace=ns)
    api.cancel_job(job_id=second.id, namespace=ns)
    assert wait_stage(api, second.id, ns).status.stage == "CANCELED"


def test_schedule_fires_when_the_clock_advances(api: HfApi, emulator: Emulator, ns: str) -> None:
    active = api.create_scheduled_job(image="python:3.12", command=PRINT, schedule="@hourly", namespace=ns)
    paused = api.create_scheduled_job(
        image="python:3.12", command=["python", "-c", "print('must not run')"], schedule="@hourly", namespace=ns
    )
    api.suspend_scheduled_job(scheduled_job_id=paused.id, namespace=ns)
    assert emulator.advance(0) == []

    fired = emulator.advance(3600)
    assert len(fired) == 1
    job = wait_stage(api, fired[0], ns)
    assert job.status.stage == "COMPLETED"
    assert job.initiator is not None and (job.initiator.type, job.initiator.id) == ("scheduled-job", active.id)
    assert list(api.fetch_job_logs(job_id=job.id, namespace=ns)) == ["scheduled hello"]

    info = api.inspect_scheduled_job(scheduled_job_id=active.id, namespace=ns)
    assert info.status.last_job is not None and info.status.last_job.id == job.id
    assert info.status.next_job_run_at is not None and info.status.next_job_run_at > _now(emulator)
    assert api.inspect_scheduled_job(scheduled_job_id=paused.id, namespace=ns).status.last_job is None
    assert [j.id for j in api.list_jobs(namespace=ns)] == [job.id]

    # The next occurrence has not come yet: nothing more fires without moving the clock.
    assert emulator.fire_schedules() == []
    poll(lambda: len(emulator.jobs()) == 1, what="exactly one job")


def _at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Each call in its own thread, released together; what each returned or raised, in order."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[Any] = [None] * len(calls)

    def one(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = calls[i]()
        except Exception as e:
            outcomes[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcomes


def test_racing_deletes_succeed_once(api: HfApi, ns: str) -> None:
    """Two deletes of one scheduled job at once: one deletes it, the other finds it gone (404), as on the
    platform. (Both used to answer 200: a client counting its deletions counted one twice.)"""
    for _ in range(25):
        sched = api.create_scheduled_job(image="python:3.12", command=PRINT, schedule="@hourly", namespace=ns)

        def delete(sched_id: str = sched.id) -> None:
            api.delete_scheduled_job(scheduled_job_id=sched_id, namespace=ns)

        outcomes = _at_once(delete, delete)
        assert outcomes.count(None) == 1, outcomes
        (error,) = (o for o in outcomes if o is not None)
        assert isinstance(error, HfHubHTTPError) and error.response.status_code == 404, outcomes


def test_a_change_racing_a_delete_does_not_bring_the_job_back(api: HfApi, ns: str) -> None:
    for _ in range(25):
        sched = api.create_scheduled_job(image="python:3.12", command=PRINT, schedule="@hourly", namespace=ns)
        outcomes = _at_once(
            lambda sched_id=sched.id: api.delete_scheduled_job(scheduled_job_id=sched_id, namespace=ns),
            lambda sched_id=sched.id: api.suspend_scheduled_job(scheduled_job_id=sched_id, namespace=ns),
        )
        assert outcomes[0] is None, outcomes  # the delete always succeeds; the suspend may find it gone
        assert not isinstance(outcomes[1], Exception) or outcomes[1].response.status_code == 404, outcomes
        assert sched.id not in [s.id for s in api.list_scheduled_jobs(namespace=ns)]
