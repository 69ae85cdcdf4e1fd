"""joblib's backend="hfremote" on the emulator: scikit-learn's searches give what the default backend gives,
a failing batch raises its own exception and cancels the other jobs, bad options create nothing."""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from helpers import Lines, hfremote_on, poll, start_script
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.svm import SVC

import hfremote.joblib
from hfremote import OptionsError, PicklingError, RemoteTraceback
from hfremote._engine import ACTIVE
from hfremote._run import RUN_LABEL
from hfremote.emulator import Emulator

DEADLINE = 120.0  # generous: a bound for polls, never a timed assertion


@pytest.fixture
def wide(tmp_path: Path) -> Iterator[Emulator]:
    """An emulator that runs up to 6 jobs at once (the default one runs as many as there are CPUs): the
    call's jobs are created in no set order, and a task that waits must not hold up the one that fails."""
    with Emulator(tmp_path / "wide-emulator", token="hf_test_token_1234567890", max_running=6) as emu, hfremote_on(emu):
        yield emu


def joblib_jobs(emulator: Emulator) -> list[dict[str, Any]]:
    return [job for job in emulator.jobs(newest_first=False) if job["labels"].get("name") == "joblib"]


def settled(emulator: Emulator) -> list[dict[str, Any]]:
    """The joblib jobs once none is SCHEDULING or RUNNING."""
    jobs: list[dict[str, Any]] = poll(
        lambda: (jobs := joblib_jobs(emulator)) and not any(j["status"]["stage"] in ACTIVE for j in jobs) and jobs,
        DEADLINE,
        what="the joblib jobs to end",
    )
    return jobs


def test_grid_search_gives_what_the_default_backend_gives(remote_emulator: Emulator) -> None:
    X, y = load_iris(return_X_y=True)
    grid = {"C": [0.1, 10.0], "kernel": ["linear", "rbf"]}
    here = GridSearchCV(SVC(), grid, cv=2).fit(X, y)  # the default backend, n_jobs=None: in this process
    with joblib.parallel_config(backend="hfremote", n_jobs=4):
        remote = GridSearchCV(SVC(), grid, cv=2).fit(X, y)
    assert remote.best_params_ == here.best_params_
    assert remote.best_score_ == here.best_score_
    np.testing.assert_array_equal(remote.cv_results_["mean_test_score"], here.cv_results_["mean_test_score"])
    np.testing.assert_array_equal(remote.predict(X), here.predict(X))
    jobs = settled(remote_emulator)
    # 4 candidates x 2 folds, one batch (a job) each, all of one run
    assert len(jobs) == 8
    assert len({job["labels"][RUN_LABEL] for job in jobs}) == 1
    assert {job["status"]["stage"] for job in jobs} == {"COMPLETED"}


def test_cross_validate_and_a_nested_parallel_call_in_the_job(remote_emulator: Emulator) -> None:
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500)
    here = cross_validate(model, X, y, cv=3, return_train_score=True)
    with joblib.parallel_config(backend="hfremote", n_jobs=-1):
        remote = cross_validate(model, X, y, cv=3, return_train_score=True)
        inner = joblib.Parallel()(joblib.delayed(nested_backend)() for _ in range(1))
    for key in ("test_score", "train_score"):
        np.testing.assert_array_equal(remote[key], here[key])
    # a Parallel call inside a job runs on that job's machine, with joblib's own process backend
    assert inner == [("LokyBackend", [0, 1, 4])]
    runs = {job["labels"][RUN_LABEL] for job in settled(remote_emulator)}
    assert len(runs) == 2  # one run per Parallel call


def nested_backend() -> tuple[str, list[int]]:
    backend, _ = joblib.parallel.get_active_backend()
    return type(backend).__name__, joblib.Parallel(n_jobs=2)(joblib.delayed(pow)(i, 2) for i in range(3))


def fail_or_wait(i: int) -> int:
    if i == 0:
        raise MyJoblibError(f"task {i} failed", i)
    time.sleep(300)  # cancelled long before
    return i


class MyJoblibError(ValueError):
    def __init__(self, message: str, task: int) -> None:
        super().__init__(message, task)
        self.task = task


def test_an_error_in_a_batch_is_raised_as_itself_and_cancels_the_other_jobs(wide: Emulator) -> None:
    with (
        joblib.parallel_config(backend="hfremote", n_jobs=3, timeout="10m"),
        pytest.raises(MyJoblibError, match="task 0 failed") as caught,
    ):
        joblib.Parallel()(joblib.delayed(fail_or_wait)(i) for i in range(8))
    assert caught.value.task == 0
    assert isinstance(caught.value.__cause__, RemoteTraceback)
    # the remote traceback starts at the task, in this file, as a local one would (not in hfremote or joblib)
    remote = caught.value.__cause__.text
    assert remote.startswith(f'Traceback (most recent call last):\n  File "{__file__}", line '), remote
    assert "in fail_or_wait" in remote and "call_batch" not in remote and "parallel.py" not in remote, remote
    jobs = settled(wide)
    # at most n_jobs jobs were ever created (the other batches waited for a free one, then were dropped)
    assert len(jobs) <= 3
    stages = sorted(job["status"]["stage"] for job in jobs)
    assert stages[0] == "CANCELED" and stages.count("ERROR") + stages.count("COMPLETED") == 1, stages


def test_a_parallel_timeout_cancels_the_jobs(remote_emulator: Emulator) -> None:
    # joblib raises multiprocessing's TimeoutError, whatever the backend
    with joblib.parallel_config(backend="hfremote", n_jobs=2), pytest.raises(multiprocessing.TimeoutError):
        joblib.Parallel(timeout=1)(joblib.delayed(time.sleep)(300) for _ in range(3))
    assert [job["status"]["stage"] for job in settled(remote_emulator)] == ["CANCELED"] * 2


def test_bad_options_are_refused_before_any_job(remote_emulator: Emulator) -> None:
    with pytest.raises(OptionsError, match="flavor 'cpu-huge' is not a hardware flavor"):
        joblib.parallel_config(backend="hfremote", flavor="cpu-huge")
    with pytest.raises(OptionsError, match="unknown option"):
        joblib.parallel_config(backend="hfremote", flavour="cpu-upgrade")
    with pytest.raises(OptionsError, match="timeout"):
        joblib.parallel_config(backend="hfremote", timeout="soon")
    with pytest.raises(OptionsError, match="detach"):
        joblib.parallel_config(backend="hfremote", detach=True)
    # an argument that cannot travel fails its batch (as PicklingError, naming it), before its job exists;
    # batches failing at once on several threads: joblib gets the failure, not the cancellations it causes
    with (
        joblib.parallel_config(backend="hfremote", n_jobs=4),
        pytest.raises(PicklingError) as caught,
        open(__file__) as f,
    ):
        joblib.Parallel()(joblib.delayed(len)(f) for _ in range(8))
    assert str(caught.value).startswith("a task of this joblib call cannot travel to its job: an open file")
    # remote() options given to Parallel itself are checked when the call starts
    with pytest.raises(OptionsError, match="unknown option"):
        tasks = (joblib.delayed(pow)(i, 2) for i in range(2))
        joblib.Parallel(backend="hfremote", n_jobs=2, flavour="cpu-upgrade")(tasks)
    assert remote_emulator.jobs() == []


def test_n_jobs_and_options_given_to_parallel(remote_emulator: Emulator) -> None:
    backend = hfremote.joblib.HFRemoteBackend()
    assert backend.effective_n_jobs(-1) == hfremote.joblib.DEFAULT_JOBS == 16
    assert backend.effective_n_jobs(None) == 16
    assert backend.effective_n_jobs(-2) == 15
    assert backend.effective_n_jobs(-100) == 1
    assert backend.effective_n_jobs(40) == 40
    with pytest.raises(ValueError, match="n_jobs == 0"):
        backend.effective_n_jobs(0)
    # n_jobs=1 runs in this process, as with every joblib backend: no job
    with joblib.parallel_config(backend="hfremote", n_jobs=1):
        assert joblib.Parallel()(joblib.delayed(pow)(i, 2) for i in range(3)) == [0, 1, 4]
    assert remote_emulator.jobs() == []
    # options given to Parallel apply to that call only
    with joblib.parallel_config(backend="hfremote", n_jobs=2, flavor="cpu-upgrade"):
        assert joblib.Parallel(timeout=120, env={"A": "1"})(joblib.delayed(pow)(i, 2) for i in range(2)) == [0, 1]
        assert joblib.Parallel(flavor="cpu-basic")(joblib.delayed(pow)(i, 2) for i in range(2)) == [0, 1]
        assert joblib.Parallel()(joblib.delayed(pow)(i, 2) for i in range(1)) == [0]
    flavors = [job["flavor"] for job in settled(remote_emulator)]
    assert flavors == ["cpu-upgrade", "cpu-upgrade", "cpu-basic", "cpu-basic", "cpu-upgrade"], flavors


CTRL_C_SCRIPT = """
import time

import joblib
import hfremote.joblib


def wait(i):
    time.sleep(300)
    return i


with joblib.parallel_config(backend="hfremote", n_jobs=2):
    print("STARTED", flush=True)
    print(joblib.Parallel()(joblib.delayed(wait)(i) for i in range(4)), flush=True)
"""


def test_ctrl_c_cancels_the_jobs(remote_emulator: Emulator, tmp_path: Path) -> None:
    proc = start_script(remote_emulator, tmp_path, "ctrl_c_joblib.py", CTRL_C_SCRIPT)
    try:
        out, err = Lines(proc.stdout), Lines(proc.stderr)  # type: ignore[arg-type]
        out.wait_for("STARTED", DEADLINE)
        poll(  # both jobs created (n_jobs=2: the other tasks wait here), one of them running at least
            lambda: len(s := [j["status"]["stage"] for j in joblib_jobs(remote_emulator)]) == 2 and "RUNNING" in s,
            DEADLINE,
            what="the call's two jobs",
        )
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err.rest(), err.rest()
    jobs = settled(remote_emulator)
    assert [job["status"]["stage"] for job in jobs] == ["CANCELED"] * 2
