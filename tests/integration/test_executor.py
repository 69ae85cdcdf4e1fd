"""hfremote.Executor on the emulator: the Executor contract, one run per function, max_workers, cancels.

CPython's own executor tests run against it too: scripts/cpython_executor_tests.py.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import poll, run_script

import hfremote
from hfremote.emulator import Emulator


def mul(x: int, y: int) -> int:
    return x * y


def divide(x: int, y: int) -> float:
    return x / y


def wait_for(gate: str, value: Any = None) -> Any:
    """Return `value` once the file `gate` exists (a job on the host-process emulator sees the test's files)."""
    deadline = time.monotonic() + 120  # a job never outlives a broken test for long
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{gate} never appeared")
        time.sleep(0.02)
    return value


def touch(path: str) -> str:
    Path(path).touch()
    return path


def slow_square(x: int) -> int:
    time.sleep(1.5)  # several of its lease's checks (every ttl / 8)
    return x * x


def die() -> None:
    os._exit(3)


class Scaler:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def scale(self, x: int) -> int:
        return x * self.factor


def _jobs(emulator: Emulator, run_id: str) -> list[dict[str, Any]]:
    return emulator.jobs(labels=[("hfremote-run", run_id)])


def _stage(emulator: Emulator, job_id: str) -> str:
    (job,) = [j for j in emulator.jobs() if j["id"] == job_id]
    return str(job["status"]["stage"])


def test_submit_and_map(remote_emulator: Emulator) -> None:
    with hfremote.Executor(max_workers=4) as ex:
        future = ex.submit(mul, 6, y=7)
        assert isinstance(future, hfremote.RemoteFuture)
        assert isinstance(future, concurrent.futures.Future)
        assert future.result(timeout=120) == 42
        assert future.stage == "COMPLETED" and future.job_id
        assert list(ex.map(mul, range(5), range(5))) == [0, 1, 4, 9, 16]
        assert list(ex.map(mul, range(7), range(7), chunksize=3)) == [x * x for x in range(7)]
        results = ex.map(divide, [1, 1, 1], [1, 0, 2], chunksize=2)  # the failure is mid-chunk
        assert next(results) == 1.0
        with pytest.raises(ZeroDivisionError) as raised:
            next(results)
        assert isinstance(raised.value.__cause__, hfremote.RemoteTraceback)


def test_calls_of_one_function_share_one_run(remote_emulator: Emulator) -> None:
    with hfremote.Executor() as ex:
        first = [ex.submit(mul, i, 2) for i in range(3)]
        assert [f.result(timeout=120) for f in first] == [0, 2, 4]
        later = ex.submit(mul, 5, 2)  # after the first calls ended: still the same run
        assert later.result(timeout=120) == 10
        assert list(ex.map(mul, range(4), range(4), chunksize=2)) == [0, 1, 4, 9]
        other = ex.submit(divide, 1, 2)
        assert other.result(timeout=120) == 0.5
    futures = [*first, later]
    assert len({f.run_id for f in futures}) == 1
    assert other.run_id != later.run_id
    jobs = _jobs(remote_emulator, later.run_id)
    # One job per call (chunk `<index>-1`), two for the map's two chunks of two inputs.
    calls = sorted((j["labels"]["hfremote-call"] for j in jobs), key=lambda c: int(c.split("-")[0]))
    assert calls == ["0-1", "1-1", "2-1", "3-1", "4-2", "6-2"]


def test_a_bound_method_is_packed_again_once_its_calls_are_done(remote_emulator: Emulator) -> None:
    scaler = Scaler(2)
    with hfremote.Executor() as ex:
        assert ex.submit(scaler.scale, 5).result(timeout=120) == 10
        scaler.factor = 3  # the instance travels with its method: a later call sees it as it is now
        assert ex.submit(scaler.scale, 5).result(timeout=120) == 15


def test_max_workers_bounds_the_unfinished_jobs(host_remote_emulator: Emulator, tmp_path: Path) -> None:
    gate = str(tmp_path / "gate")
    with hfremote.Executor(max_workers=2) as ex:
        futures = [ex.submit(wait_for, gate, i) for i in range(5)]
        run_id = futures[0].run_id
        poll(lambda: len(_jobs(host_remote_emulator, run_id)) == 2, what="two jobs")
        queued = [f for f in futures if f.stage == "QUEUED"]
        assert futures[2:] == queued and all(f.job_id == "" for f in queued)
        assert not any(f.done() for f in futures)
        assert len(_jobs(host_remote_emulator, run_id)) == 2  # still: the others wait here, not on the platform
        touch(gate)
        assert [f.result(timeout=120) for f in futures] == [0, 1, 2, 3, 4]
    assert len(_jobs(host_remote_emulator, run_id)) == 5


def test_map_submits_every_call_without_iteration(host_remote_emulator: Emulator, tmp_path: Path) -> None:
    paths = [str(tmp_path / f"done-{i}") for i in range(4)]
    with hfremote.Executor() as ex:
        ex.map(touch, paths)  # never iterated: shutdown waits for every call
    assert all(os.path.exists(p) for p in paths)


def test_map_timeout_and_closing_cancel_the_rest(host_remote_emulator: Emulator, tmp_path: Path) -> None:
    gate = str(tmp_path / "never")
    with hfremote.Executor() as ex:
        results = ex.map(wait_for, [gate, gate], timeout=0.5)
        with pytest.raises(concurrent.futures.TimeoutError):
            next(results)
        (run,) = {j["labels"]["hfremote-run"] for j in host_remote_emulator.jobs()}
        poll(
            lambda: [j["status"]["stage"] for j in _jobs(host_remote_emulator, run)] == ["CANCELED"] * 2,
            what="both jobs cancelled",
        )
        ready = str(tmp_path / "ready")
        touch(ready)
        results = ex.map(wait_for, [ready, gate, gate], [1, 2, 3])
        assert next(results) == 1
        results.close()  # type: ignore[attr-defined]  # (a generator, as Executor.map's)
    expected = ["CANCELED"] * 4 + ["COMPLETED"]  # (a cancel is a queued request)
    poll(lambda: sorted(j["status"]["stage"] for j in host_remote_emulator.jobs()) == expected, what="the cancels")


def test_shutdown_cancel_futures_cancels_only_what_waits(host_remote_emulator: Emulator, tmp_path: Path) -> None:
    gate = str(tmp_path / "gate")
    ex = hfremote.Executor(max_workers=1)
    futures = [ex.submit(wait_for, gate, i) for i in range(4)]
    poll(lambda: futures[0].job_id, what="the first job")
    ex.shutdown(wait=False, cancel_futures=True)
    assert [f.cancelled() for f in futures] == [False, True, True, True]
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(mul, 1, 2)
    touch(gate)
    assert futures[0].result(timeout=120) == 0
    assert len(host_remote_emulator.jobs()) == 1
    ex.shutdown()  # again: nothing left, returns


def test_a_cancelled_future_is_done_for_wait_and_its_job_ends(host_remote_emulator: Emulator, tmp_path: Path) -> None:
    gate = str(tmp_path / "never")
    plain = hfremote.remote(wait_for).submit(gate)
    with hfremote.Executor() as ex:
        running = ex.submit(wait_for, gate)
        poll(lambda: running.job_id, what="the job")
        for future in (plain, running):
            assert future.cancel()
            # Before the fix, wait() and as_completed() never counted a cancelled RemoteFuture as done.
            done, _ = concurrent.futures.wait([future], timeout=10)
            assert done == {future}
            assert list(concurrent.futures.as_completed([future], timeout=10)) == [future]
            poll(lambda f=future: _stage(host_remote_emulator, f.job_id) == "CANCELED", what="the job cancelled")


def test_ctrl_c_in_the_block_cancels_the_calls_and_their_jobs(host_remote_emulator: Emulator, tmp_path: Path) -> None:
    gate = str(tmp_path / "never")
    with pytest.raises(KeyboardInterrupt), hfremote.Executor(max_workers=1) as ex:
        futures = [ex.submit(wait_for, gate) for _ in range(3)]
        poll(lambda: futures[0].job_id, what="the first job")
        raise KeyboardInterrupt
    assert all(f.cancelled() for f in futures)
    poll(lambda: _stage(host_remote_emulator, futures[0].job_id) == "CANCELED", what="the job cancelled")
    assert len(host_remote_emulator.jobs()) == 1


def test_a_remote_function_keeps_its_options_under_the_executors(remote_emulator: Emulator) -> None:
    decorated = hfremote.remote(flavor="cpu-upgrade", timeout="10m")(mul)
    with hfremote.Executor(timeout="5m") as ex:
        future = ex.submit(decorated, 2, 3)
        assert future.result(timeout=120) == 6
    with hfremote.Executor(flavor="cpu-basic") as ex:
        overridden = ex.submit(decorated, 2, 4)
        assert overridden.result(timeout=120) == 8
    assert future.info.flavor == "cpu-upgrade"
    (job,) = [j for j in remote_emulator.jobs() if j["id"] == future.job_id]
    assert job["timeout"] == 300  # the executor's, over the function's
    assert overridden.info.flavor == "cpu-basic"


def test_bad_input_is_refused_before_any_request(remote_emulator: Emulator) -> None:
    before = len(remote_emulator.requests())
    with pytest.raises(hfremote.OptionsError, match="timeout"):
        hfremote.Executor(timeout="soon")
    with pytest.raises(hfremote.OptionsError, match="colour"):
        hfremote.Executor(colour="blue")
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_workers must be greater than 0"):
            hfremote.Executor(max_workers=bad)
    assert len(remote_emulator.requests()) == before
    with hfremote.Executor() as ex:
        with pytest.raises(hfremote.OptionsError, match="chunksize"):
            ex.map(mul, [1], [2], chunksize=0)
        with pytest.raises(TypeError, match="mul"):
            ex.submit(mul, 1)  # a missing argument: refused here, as a local call would
        with pytest.raises(hfremote.PicklingError, match="argument 'y'"):
            ex.submit(mul, 1, y=iter_lock())
    assert remote_emulator.jobs() == []


def iter_lock() -> Any:
    import threading

    return threading.Lock()


def test_a_job_that_dies_fails_its_future(remote_emulator: Emulator) -> None:
    with hfremote.Executor() as ex:
        future = ex.submit(die)
        with pytest.raises(hfremote.JobFailedError) as raised:
            future.result(timeout=120)
    assert raised.value.stage == "ERROR"


def test_a_run_reused_after_a_pause_longer_than_its_lease(remote_emulator: Emulator) -> None:
    hfremote.configure(lease_seconds=4)
    with hfremote.Executor() as ex:
        first = ex.submit(slow_square, 2)
        assert first.result(timeout=120) == 4
        ended = time.time()

        def renewed_after_a_whole_ttl() -> bool:
            data = first._hub.download(f"{first.namespace}/hfremote", first.layout.lease)
            return data is not None and json.loads(data)["renewed"] > ended + 4

        poll(renewed_after_a_whole_ttl, what="the lease renewed while no call of the run was unfinished")
        later = ex.submit(slow_square, 3)
        # A job that starts with a stale lease ends itself at its first look: the run's lease is kept
        # fresh for as long as the executor may give the run calls.
        assert later.result(timeout=120) == 9
        assert later.run_id == first.run_id


EXIT_SCRIPT = """
import sys, time
import hfremote

def nap(seconds):
    import time
    time.sleep(seconds)
    return seconds

ex = hfremote.Executor(max_workers=2)
futures = [ex.submit(nap, 300) for _ in range(12)]
deadline = time.monotonic() + 120
while sum(f.stage == "RUNNING" for f in futures) < 2 and time.monotonic() < deadline:
    time.sleep(0.05)
ex.shutdown(wait=False)
print("leaving", flush=True)
"""


def test_queued_calls_get_no_job_once_the_process_ends(emulator: Emulator, tmp_path: Path) -> None:
    # The exit's cancels free slots: the launcher must not create jobs for the queued calls then.
    done = run_script(emulator, tmp_path, "leave.py", EXIT_SCRIPT, timeout=240)
    assert done.returncode == 0 and "leaving" in done.stdout, done.stderr
    stages = poll(
        lambda: (
            (now := [j["status"]["stage"] for j in emulator.jobs()])
            and all(s in ("CANCELED", "COMPLETED", "ERROR") for s in now)
            and now
        ),
        timeout=60,
        what="every job to end",
    )
    assert stages == ["CANCELED"] * len(stages) and len(stages) <= 4, stages


def raises_interrupt(_: int) -> None:
    raise KeyboardInterrupt("raised in the job")


def test_an_interrupt_raised_by_a_call_is_not_a_ctrl_c(host_remote_emulator: Emulator, tmp_path: Path) -> None:
    gate = str(tmp_path / "gate")
    with pytest.raises(KeyboardInterrupt, match="raised in the job"), hfremote.Executor() as ex:
        other = ex.submit(wait_for, gate, "finished")
        failing = ex.submit(raises_interrupt, 1)
        concurrent.futures.wait([failing], timeout=120)
        touch(gate)
        failing.result()
    assert other.result(timeout=120) == "finished"  # the block's end waited for it: nobody pressed Ctrl-C
