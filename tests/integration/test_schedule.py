"""Scheduled functions end to end: `remote.schedule` deploys real scheduled jobs on the emulator, whose
clock moves with `Emulator.advance`; every run is a real job (a local process running real `uv`).

Covers idempotent deploys (created, unchanged with no upload, rescheduled in place, updated with the
old one gone), schedules firing, runs and their results, trigger/info/suspend/resume/delete, a run that
raises, bad input that creates nothing, racing deploys, and the `hfremote deploy` / `hfremote schedules`
command line.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import HfApi

import hfremote
from hfremote import Deployment, ScheduledFunction, ScheduledRun, remote
from hfremote.emulator import Emulator

pytestmark = pytest.mark.usefixtures("remote_emulator")

RESULT_TIMEOUT = 120  # generous: a deadline, not a timed assertion
BUCKET = "hfremote"


class ScheduleError(ValueError):
    """The user's own exception type, raised inside a scheduled run."""


# -- helpers -------------------------------------------------------------------------------------------


def _api(emulator: Emulator) -> HfApi:
    return HfApi(endpoint=emulator.endpoint, token=emulator.token)


def _scheduled(emulator: Emulator) -> list[Any]:
    return list(_api(emulator).list_scheduled_jobs(namespace=emulator.user))


def _files(emulator: Emulator, prefix: str = "") -> list[str]:
    """The files of the user's hfremote bucket under `prefix` ([] when the bucket does not exist)."""
    api = _api(emulator)
    bucket = f"{emulator.user}/{BUCKET}"
    if not any(b.id == bucket for b in api.list_buckets(namespace=emulator.user)):
        return []
    items = api.list_bucket_tree(bucket, prefix=prefix or None, recursive=True)
    return [item.path for item in items if getattr(item, "type", "file") == "file"]


def _requests_since(emulator: Emulator, mark: int, method: str, pattern: str) -> list[tuple[Any, ...]]:
    return [r for r in emulator.requests()[mark:] if r[1] == method and fnmatch.fnmatch(r[2], pattern)]


def _nothing_created(emulator: Emulator) -> None:
    assert _scheduled(emulator) == []
    assert list(_api(emulator).list_jobs(namespace=emulator.user)) == []
    assert _files(emulator) == []


def _schedule(cron: str, fn: Callable[..., Any], **options: Any) -> ScheduledFunction[Any, Any]:
    options.setdefault("timeout", "5m")
    return remote.schedule(cron, **options)(fn)


# -- functions deployed (shipped to the job by value) ---------------------------------------------------


def refresh(board: str = "main", top: int = 3) -> dict[str, Any]:
    import os

    return {"board": board, "top": list(range(top)), "job": os.environ.get("JOB_ID")}


def refresh_v2(board: str = "main", top: int = 3) -> dict[str, Any]:
    return {"board": board, "top": list(range(top)), "version": 2}


def fails(code: int) -> int:
    raise ScheduleError(f"refresh failed with code {code}")


# -- deploy --------------------------------------------------------------------------------------------


def test_deploy_creates_one_scheduled_job_and_again_changes_nothing(remote_emulator: Emulator) -> None:
    fn = _schedule("@daily", refresh, name="leaderboard")
    first = fn.deploy("main", top=2)
    assert isinstance(first, Deployment)
    assert (first.name, first.action, first.schedule) == ("leaderboard", "created", "@daily")
    scheduled = _scheduled(remote_emulator)
    assert [s.id for s in scheduled] == [first.scheduled_job_id]
    assert scheduled[0].schedule == "@daily"
    assert scheduled[0].job_spec.labels["hfremote-schedule"] == "leaderboard"
    assert _files(remote_emulator, "schedules/leaderboard")  # the function, its arguments, the entry script

    # The request patterns below do match what a deploy sends.
    assert _requests_since(remote_emulator, 0, "POST", "/api/buckets/*/batch")
    assert _requests_since(remote_emulator, 0, "POST", "/api/scheduled-jobs/*")

    mark = len(remote_emulator.requests())
    again = fn.deploy("main", top=2)
    assert again == Deployment("leaderboard", "unchanged", first.scheduled_job_id, "@daily")
    assert [s.id for s in _scheduled(remote_emulator)] == [first.scheduled_job_id]
    assert _requests_since(remote_emulator, mark, "POST", "/api/buckets/*/batch") == []
    assert _requests_since(remote_emulator, mark, "POST", "/api/scheduled-jobs/*") == []
    assert _requests_since(remote_emulator, mark, "DELETE", "/api/scheduled-jobs/*") == []
    assert list(_api(remote_emulator).list_jobs(namespace=remote_emulator.user)) == []  # deploying runs nothing


def test_reschedule_keeps_the_scheduled_job(remote_emulator: Emulator) -> None:
    first = _schedule("@daily", refresh, name="board").deploy()
    # Another ScheduledFunction over the same function, name and arguments: only the cron differs.
    moved = _schedule("*/15 * * * *", refresh, name="board").deploy()
    assert (moved.action, moved.scheduled_job_id, moved.schedule) == (
        "rescheduled",
        first.scheduled_job_id,
        "*/15 * * * *",
    )
    api = _api(remote_emulator)
    seen = api.inspect_scheduled_job(scheduled_job_id=first.scheduled_job_id, namespace=remote_emulator.user)
    assert seen.schedule == "*/15 * * * *"
    assert [s.id for s in _scheduled(remote_emulator)] == [first.scheduled_job_id]

    # Setting `.schedule` on the object does the same.
    fn = _schedule("*/15 * * * *", refresh, name="board")
    with pytest.raises(hfremote.OptionsError):
        fn.schedule = "@fortnightly"
    fn.schedule = "@weekly"
    assert fn.deploy().action == "rescheduled"
    assert fn.info().schedule == "@weekly"
    assert fn.deploy().action == "unchanged"


def test_code_or_argument_change_replaces_the_scheduled_job(remote_emulator: Emulator) -> None:
    first = _schedule("@daily", refresh, name="board").deploy("main")
    old_files = set(_files(remote_emulator, "schedules/board"))

    # A different function body under the same name.
    code = _schedule("@daily", refresh_v2, name="board").deploy("main")
    assert code.action == "updated"
    assert code.scheduled_job_id != first.scheduled_job_id
    assert [s.id for s in _scheduled(remote_emulator)] == [code.scheduled_job_id]
    assert set(_files(remote_emulator, "schedules/board")) > old_files  # a new folder beside the old one

    # Different deploy arguments.
    args = _schedule("@daily", refresh_v2, name="board").deploy("other")
    assert args.action == "updated"
    assert args.scheduled_job_id not in {first.scheduled_job_id, code.scheduled_job_id}
    assert [s.id for s in _scheduled(remote_emulator)] == [args.scheduled_job_id]

    # Different options (the job spec) count too; the schedule may change at the same time.
    flavor = _schedule("@hourly", refresh_v2, name="board", flavor="cpu-upgrade").deploy("other")
    assert flavor.action == "updated"
    only = _scheduled(remote_emulator)
    assert [s.id for s in only] == [flavor.scheduled_job_id]
    assert only[0].schedule == "@hourly"


# -- runs ----------------------------------------------------------------------------------------------


def test_schedule_fires_and_runs_keep_their_own_results(remote_emulator: Emulator) -> None:
    fn = _schedule("@hourly", refresh, name="hourly-board")
    fn.deploy("weekly", top=2)
    assert fn.runs() == []

    fired = remote_emulator.advance(3600)
    assert len(fired) == 1
    runs = fn.runs()
    assert [r.job_id for r in runs] == fired
    assert isinstance(runs[0], ScheduledRun)
    assert runs[0].result(RESULT_TIMEOUT) == {"board": "weekly", "top": [0, 1], "job": fired[0]}

    # The first run has ended, so the next occurrence is not skipped for want of concurrency.
    fired_again = remote_emulator.advance(3600)
    assert len(fired_again) == 1 and fired_again != fired
    runs = fn.runs()
    assert [r.job_id for r in runs] == [fired_again[0], fired[0]]  # newest first
    assert [r.result(RESULT_TIMEOUT)["job"] for r in runs] == [fired_again[0], fired[0]]
    results = _files(remote_emulator, "schedules/hourly-board")
    assert sorted(p.rsplit("/", 1)[1] for p in results if "/results-" in p) == sorted(
        f"results-{job}.pkl" for job in fired + fired_again
    )
    assert len(fn.runs(limit=1)) == 1


def test_trigger_info_suspend_resume(remote_emulator: Emulator) -> None:
    fn = _schedule("@hourly", refresh, name="ctl")
    done = fn.deploy("now")
    info = fn.info()
    assert (info.name, info.scheduled_job_id, info.schedule, info.suspended) == (
        "ctl",
        done.scheduled_job_id,
        "@hourly",
        False,
    )
    assert info.next_run is not None and info.last_run is None and info.last_job_id is None

    run = fn.trigger()
    assert isinstance(run, ScheduledRun)
    listed = fn.runs()  # the same run, while it is going: both handles complete
    assert [r.job_id for r in listed] == [run.job_id]
    assert listed[0].result(RESULT_TIMEOUT) == {"board": "now", "top": [0, 1, 2], "job": run.job_id}
    assert run.result(RESULT_TIMEOUT) == {"board": "now", "top": [0, 1, 2], "job": run.job_id}
    info = fn.info()
    assert info.last_job_id == run.job_id and info.last_run is not None and info.next_run is not None

    fn.suspend()
    info = fn.info()
    assert info.suspended is True and info.next_run is None
    assert remote_emulator.advance(3600) == []
    assert remote_emulator.advance(3600) == []

    fn.resume()
    assert fn.info().suspended is False and fn.info().next_run is not None
    fired = remote_emulator.advance(3600)
    assert len(fired) == 1
    assert fn.runs()[0].job_id == fired[0]
    assert fn.runs()[0].result(RESULT_TIMEOUT)["job"] == fired[0]


def test_delete_removes_the_scheduled_job_and_its_files(remote_emulator: Emulator) -> None:
    fn = _schedule("@hourly", refresh, name="doomed")
    fn.deploy()
    assert fn.trigger().result(RESULT_TIMEOUT)["board"] == "main"
    assert any("/results-" in p for p in _files(remote_emulator, "schedules/doomed"))

    fn.delete()
    assert _scheduled(remote_emulator) == []
    assert _files(remote_emulator, "schedules/doomed") == []
    with pytest.raises(hfremote.HFRemoteError, match="not deployed"):
        fn.info()
    with pytest.raises(hfremote.HFRemoteError, match="doomed"):
        fn.delete()
    assert fn.deploy().action == "created"  # and it can come back


def test_a_run_that_raises_raises_the_users_exception(remote_emulator: Emulator) -> None:
    fn = _schedule("@hourly", fails, name="failing")
    fn.deploy(7)
    fired = remote_emulator.advance(3600)
    assert len(fired) == 1
    with pytest.raises(ScheduleError, match="code 7") as caught:
        fn.runs()[0].result(RESULT_TIMEOUT)
    assert isinstance(caught.value.__cause__, hfremote.RemoteTraceback)
    assert "refresh failed" in str(caught.value.__cause__)


def test_a_run_finds_its_result_without_a_job_id(remote_emulator: Emulator) -> None:
    # Where the platform sets no JOB_ID, the entry script names the result itself and logs the name.
    fn = _schedule("@hourly", refresh, name="no-job-id", env={"JOB_ID": ""})
    fn.deploy("b", 2)
    run = fn.trigger()
    assert run.result(RESULT_TIMEOUT) == {"board": "b", "top": [0, 1], "job": ""}
    assert any("this run's result is results-" in line for line in run.logs())


# -- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cron", ["* * *", "@fortnightly", "61 * * * *", "", "0 0 31 2 *"])
def test_bad_cron_fails_at_decoration(remote_emulator: Emulator, cron: str) -> None:
    with pytest.raises(hfremote.OptionsError):
        remote.schedule(cron)(refresh)
    _nothing_created(remote_emulator)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"concurrency": "false"}, "concurrency='false'"),
        ({"suspend": "yes"}, "suspend='yes'"),
        ({"timeout": "31d"}, "30 days"),
        ({"env": ["A=1"]}, "env=['A=1']"),
    ],
)
def test_bad_schedule_options_fail_at_decoration(
    remote_emulator: Emulator, options: dict[str, Any], words: str
) -> None:
    with pytest.raises(hfremote.OptionsError, match=re.escape(words)):
        remote.schedule("@hourly", **options)(refresh)
    _nothing_created(remote_emulator)


def test_bad_input_fails_at_deploy_and_creates_nothing(remote_emulator: Emulator) -> None:
    unknown = remote.schedule("@hourly", flavor="no-such-flavor")(refresh)
    with pytest.raises(hfremote.OptionsError, match="no-such-flavor"):
        unknown.deploy()
    _nothing_created(remote_emulator)

    def guarded(lock: Any = threading.Lock()) -> bool:  # noqa: B008 - the default is the point
        return lock is not None

    with pytest.raises(hfremote.PicklingError):
        remote.schedule("@hourly", name="guarded")(guarded).deploy()
    _nothing_created(remote_emulator)

    with pytest.raises(hfremote.PicklingError):
        _schedule("@hourly", refresh, name="bad-arg").deploy(threading.Lock())
    with pytest.raises(TypeError):
        _schedule("@hourly", refresh, name="bad-arg").deploy("a", 1, "extra")
    _nothing_created(remote_emulator)

    assert not [r for r in remote_emulator.requests() if r[1] in ("POST", "PUT", "DELETE")]


def _race(fn: ScheduledFunction[Any, Any], callers: int = 2) -> list[Any]:
    """`fn.deploy()` from several threads released at once; what each returned or raised."""
    barrier = threading.Barrier(callers)
    outcomes: list[Any] = []

    def deploy() -> None:
        barrier.wait()
        try:
            outcomes.append(fn.deploy())
        except BaseException as e:
            outcomes.append(e)

    threads = [threading.Thread(target=deploy) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(RESULT_TIMEOUT)
    return outcomes


def test_racing_deploys_leave_one_scheduled_job(remote_emulator: Emulator) -> None:
    for round in range(4):
        fn = _schedule("@daily", refresh, name=f"race-{round}")
        outcomes = _race(fn)
        assert len(outcomes) == 2 and all(isinstance(o, Deployment) for o in outcomes), outcomes
        mine = [s for s in _scheduled(remote_emulator) if s.job_spec.labels["hfremote-schedule"] == f"race-{round}"]
        assert len(mine) == 1
        assert mine[0].id in {o.scheduled_job_id for o in outcomes}
        assert fn.deploy().action == "unchanged"
    # Every scheduled job a losing deploy created was deleted again.
    log = remote_emulator.requests()
    creates = [r for r in log if r[1] == "POST" and r[2] == f"/api/scheduled-jobs/{remote_emulator.user}"]
    deletes = [r for r in log if r[1] == "DELETE" and r[2].startswith("/api/scheduled-jobs/") and r[3] < 300]
    assert len(creates) - len(deletes) == 4, [r for r in log if "/scheduled-jobs" in r[2]]

    # Racing updates: both replace the deployed one; one survives, the old one is gone.
    old = _schedule("@daily", refresh, name="race-update").deploy()
    outcomes = _race(_schedule("@daily", refresh_v2, name="race-update"))
    assert len(outcomes) == 2 and all(isinstance(o, Deployment) for o in outcomes), outcomes
    mine = [s for s in _scheduled(remote_emulator) if s.job_spec.labels["hfremote-schedule"] == "race-update"]
    assert len(mine) == 1 and mine[0].id != old.scheduled_job_id


def test_local_calls_the_plain_function(remote_emulator: Emulator) -> None:
    fn = _schedule("@hourly", refresh, name="local")
    assert fn.local("x", top=1) == {"board": "x", "top": [0], "job": os.environ.get("JOB_ID")}
    with pytest.raises(ScheduleError):
        _schedule("@hourly", fails).local(3)
    assert fn.__wrapped__ is refresh and fn.__doc__ == refresh.__doc__
    assert "local" in repr(fn)
    _nothing_created(remote_emulator)


# -- the command line ------------------------------------------------------------------------------------


MODULE = """
from hfremote import remote


@remote.schedule("@hourly", name="cli-board", timeout="5m")
def nightly() -> dict:
    return {"rows": 3}
"""


def _cli(emulator: Emulator, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HF_ENDPOINT": emulator.endpoint,
        "HF_TOKEN": emulator.token,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_XET_TELEMETRY_ENABLED": "false",
        "HF_HOME": str(tmp_path / "hf-home"),
    }
    env.pop("HFREMOTE_BACKEND", None)
    return subprocess.run(
        [sys.executable, "-m", "hfremote.cli", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RESULT_TIMEOUT,
    )


def test_cli_deploy_and_schedules(remote_emulator: Emulator, tmp_path: Path) -> None:
    module = tmp_path / "jobs_module.py"
    module.write_text(textwrap.dedent(MODULE))

    created = _cli(remote_emulator, tmp_path, "deploy", str(module))
    assert created.returncode == 0, created.stderr
    assert "created" in created.stdout and "cli-board" in created.stdout
    [sched] = _scheduled(remote_emulator)
    assert sched.id in created.stdout

    again = _cli(remote_emulator, tmp_path, "deploy", str(module))
    assert again.returncode == 0, again.stderr
    assert "unchanged" in again.stdout
    assert [s.id for s in _scheduled(remote_emulator)] == [sched.id]

    listed = _cli(remote_emulator, tmp_path, "schedules")
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if "cli-board" in line]
    next_run = sched.status.next_job_run_at
    assert "@hourly" in row and sched.id in row and f"{next_run:%Y-%m-%d %H:%M}" in row

    triggered = _cli(remote_emulator, tmp_path, "schedules", "trigger", "cli-board")
    assert triggered.returncode == 0, triggered.stderr
    [job] = _api(remote_emulator).list_jobs(namespace=remote_emulator.user)
    assert job.id in triggered.stdout
    fn = remote.schedule("@hourly", name="cli-board")(refresh)  # a handle by name, for runs()
    assert fn.runs()[0].result(RESULT_TIMEOUT) == {"rows": 3}

    suspended = _cli(remote_emulator, tmp_path, "schedules", "suspend", "cli-board")
    assert suspended.returncode == 0 and "suspended cli-board" in suspended.stdout
    assert fn.info().suspended is True
    assert remote_emulator.advance(3600) == []
    listed = _cli(remote_emulator, tmp_path, "schedules")
    [row] = [line for line in listed.stdout.splitlines() if "cli-board" in line]
    assert "True" in row

    resumed = _cli(remote_emulator, tmp_path, "schedules", "resume", "cli-board")
    assert resumed.returncode == 0 and "resumed cli-board" in resumed.stdout
    assert fn.info().suspended is False

    unknown = _cli(remote_emulator, tmp_path, "schedules", "suspend", "no-such-board")
    assert unknown.returncode == 1
    assert "no-such-board" in unknown.stderr and "Traceback" not in unknown.stderr

    deleted = _cli(remote_emulator, tmp_path, "schedules", "delete", "cli-board")
    assert deleted.returncode == 0 and "deleted cli-board" in deleted.stdout
    assert _scheduled(remote_emulator) == []
    assert _files(remote_emulator, "schedules/cli-board") == []

    again = _cli(remote_emulator, tmp_path, "schedules", "delete", "cli-board")
    assert again.returncode == 1 and "cli-board" in again.stderr and "Traceback" not in again.stderr
