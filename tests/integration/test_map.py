"""`RemoteFunction.map` / `starmap` end to end: many inputs fanned out as real jobs on the emulator.

Covers result order (ordered and as completed), chunks, several iterables, `max_parallel` (checked on
the emulator's own job records), a 10,000-input generator read lazily, exceptions in place, retries,
cancellation (first failure, a failing input iterator, leaving the loop early, Ctrl-C), logs and the
progress bar, cost estimates and limits, and gather / wait / as_completed.
"""

from __future__ import annotations

import concurrent.futures
import gc
import re
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import Lines, MyError, hfremote_on, poll, start_script
from huggingface_hub import HfApi

import hfremote
from hfremote import MapResults, RemoteFuture, remote
from hfremote.emulator import Emulator

RUN_LABEL = "hfremote-run"
ACTIVE = ("SCHEDULING", "RUNNING")
DEADLINE = 60.0  # generous: a deadline for polls, never a timed assertion


# -- helpers ------------------------------------------------------------------------------------------


@pytest.fixture
def wide(tmp_path: Path) -> Iterator[Emulator]:
    """An emulator that runs up to 6 jobs at once (the default one runs as many as there are CPUs)."""
    with Emulator(tmp_path / "wide-emulator", token="hf_test_token_1234567890", max_running=6) as emu, hfremote_on(emu):
        yield emu


def map_jobs(emulator: Emulator, name: str) -> list[dict[str, Any]]:
    """The job records of the one map of function `name` (oldest first)."""
    jobs = [job for job in emulator.jobs(newest_first=False) if job["labels"].get("name") == name]
    assert len({job["labels"][RUN_LABEL] for job in jobs}) <= 1, "expected the jobs of a single map"
    return jobs


def stages(emulator: Emulator, name: str) -> list[str]:
    return [job["status"]["stage"] for job in map_jobs(emulator, name)]


def settled(emulator: Emulator, name: str) -> list[str]:
    """Wait until no job of the map is SCHEDULING or RUNNING; their final stages."""
    final: list[str] = poll(
        lambda: (s := stages(emulator, name)) and not any(stage in ACTIVE for stage in s) and s,
        DEADLINE,
        what=f"the jobs of {name} to end",
    )
    return final


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def max_overlap(jobs: list[dict[str, Any]]) -> int:
    """The largest number of these jobs RUNNING at the same moment, from their startedAt/finishedAt."""
    events = []
    for job in jobs:
        events += [(when(job["startedAt"]), 1), (when(job["finishedAt"]), -1)]
    events.sort(key=lambda event: (event[0], event[1]))  # at a tie, an end comes before a start
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


# -- 1. order ------------------------------------------------------------------------------------------


def test_results_in_input_order(remote_emulator: Emulator) -> None:
    @remote(timeout=60)
    def square(x: int) -> int:
        return x * x

    assert list(square.map(range(12))) == [x * x for x in range(12)]
    assert len(map_jobs(remote_emulator, "square")) == 12


def test_unordered_results_are_the_same_multiset(remote_emulator: Emulator) -> None:
    @remote(timeout=60)
    def cube(x: int) -> int:
        return x**3

    assert sorted(cube.map(range(12), ordered=False)) == [x**3 for x in range(12)]


def test_unordered_map_longer_than_its_read_ahead(remote_emulator: Emulator) -> None:
    """More inputs than max_parallel's read-ahead window: the map must keep reading, not spin forever."""

    @remote(timeout=60)
    def double(x: int) -> int:
        return 2 * x

    got = list(double.map(range(14), ordered=False, max_parallel=1, chunksize=1))
    assert sorted(got) == [2 * x for x in range(14)]


def test_unordered_follows_completion(remote_emulator: Emulator) -> None:
    @remote(timeout=60)
    def nap(x: int) -> int:
        import time

        time.sleep(1.5 if x == 0 else 0)
        return x

    got = list(nap.map(range(4), ordered=False))
    assert sorted(got) == [0, 1, 2, 3]
    assert got[0] != 0, got


# -- 2. chunks, several iterables, starmap ----------------------------------------------------------------


def test_chunksize_groups_inputs_into_jobs(remote_emulator: Emulator) -> None:
    @remote(timeout=60)
    def plus_one(x: int) -> int:
        return x + 1

    assert list(plus_one.map(range(20), chunksize=5)) == list(range(1, 21))
    jobs = map_jobs(remote_emulator, "plus_one")
    assert len(jobs) == 4
    assert all(job["status"]["stage"] == "COMPLETED" for job in jobs)


def test_several_iterables_are_zipped(remote_emulator: Emulator) -> None:
    @remote(timeout=60)
    def add(a: int, b: int) -> int:
        return a + b

    assert list(add.map([1, 2, 3], [10, 20, 30, 40], chunksize=2)) == [11, 22, 33]  # the shortest one wins


def test_starmap(remote_emulator: Emulator) -> None:
    @remote(timeout=60)
    def power(base: int, exponent: int) -> int:
        return int(base**exponent)

    pairs = iter([(2, 3), (3, 2), (10, 0), (5, 1)])  # an iterator, no len
    assert list(power.starmap(pairs, chunksize=3)) == [8, 9, 1, 5]


# -- 3. max_parallel -----------------------------------------------------------------------------------


def test_max_parallel_is_respected(wide: Emulator) -> None:
    @remote(timeout=60)
    def half_second(x: int) -> int:
        import time

        time.sleep(0.5)
        return -x

    assert list(half_second.map(range(8), max_parallel=2)) == [-x for x in range(8)]
    jobs = map_jobs(wide, "half_second")
    assert len(jobs) == 8
    assert 1 <= max_overlap(jobs) <= 2


# -- 4. a long input, read lazily ------------------------------------------------------------------------


def test_ten_thousand_inputs_from_a_generator(remote_emulator: Emulator) -> None:
    """Inputs are read as the map needs them, never all at once (a memory bound that does not grow).

    Measured by how far the generator has been read each time a result arrives: tracemalloc would
    also trace the in-process emulator (its uploads and storage) and slow the whole test six-fold.
    """
    consumed = 0

    def items() -> Iterator[str]:
        nonlocal consumed
        for i in range(10_000):
            consumed += 1
            yield f"{i:08d}" + "x" * 1016  # 1 KB each: all inputs together would be ~10 MB

    @remote(timeout=120)
    def parse(item: str) -> int:
        return int(item[:8]) * 3 + len(item)

    leads = []
    for i, value in enumerate(parse.map(items(), chunksize=500, max_parallel=2)):
        assert value == i * 3 + 1024
        leads.append(consumed - i)  # read but not yet handed back
    assert len(leads) == 10_000
    assert leads[0] < 10_000  # the first result came before the input was read to the end
    assert max(leads) <= 6_000, max(leads)  # a few windows of chunks ahead, whatever the input's length
    assert len(map_jobs(remote_emulator, "parse")) == 20


# -- 5. exceptions in place -----------------------------------------------------------------------------


def test_return_exceptions_keeps_them_in_place(remote_emulator: Emulator) -> None:
    @remote(timeout=60)
    def odd_fails(x: int) -> int:
        if x % 2:
            raise MyError(f"{x} is odd", code=x)
        return x

    got = list(odd_fails.map(range(6), return_exceptions=True, chunksize=2, logs="none"))
    assert [v for v in got[::2]] == [0, 2, 4]
    for x, error in zip((1, 3, 5), got[1::2], strict=True):
        assert isinstance(error, MyError)
        assert error.code == x
        assert str(error) == f"{x} is odd (code {x})"
        assert isinstance(error.__cause__, hfremote.RemoteTraceback)
        assert "odd_fails" in error.__cause__.text


# -- 6. retries --------------------------------------------------------------------------------------------


def test_retry_cures_a_failure(host_remote_emulator: Emulator, tmp_path: Path) -> None:
    marker, counter = tmp_path / "failed-once", tmp_path / "runs.txt"

    @remote(timeout=60)
    def flaky(x: int) -> int:
        with open(counter, "a") as f:
            f.write(f"{x}\n")
        if x == 3 and not marker.exists():
            marker.touch()
            raise MyError("first try fails", code=x)
        return x * 10

    assert list(flaky.map(range(5), retries=1, logs="none")) == [0, 10, 20, 30, 40]
    runs = counter.read_text().split()
    assert sorted(runs) == ["0", "1", "2", "3", "3", "4"]


def test_retries_of_the_awaited_input_never_stall(host_remote_emulator: Emulator, tmp_path: Path) -> None:
    """Input 0 fails three times while later inputs fill the read-ahead: its retries still run."""
    counter = tmp_path / "runs.txt"

    @remote(timeout=60)
    def stubborn(x: int) -> int:
        with open(counter, "a") as f:
            f.write(f"{x}\n")
        if x == 0 and counter.read_text().split().count("0") <= 3:
            raise MyError("not yet", code=0)
        return x

    got: list[int] = []
    consumer = threading.Thread(
        target=lambda: got.extend(stubborn.map(range(12), max_parallel=1, retries=3, logs="none")), daemon=True
    )
    consumer.start()
    consumer.join(DEADLINE)
    assert not consumer.is_alive(), f"the map stalled; results so far: {got}"
    assert got == list(range(12))
    assert counter.read_text().split().count("0") == 4


def test_retries_exhausted_raise_the_users_exception(host_remote_emulator: Emulator, tmp_path: Path) -> None:
    counter = tmp_path / "runs.txt"

    @remote(timeout=60)
    def doomed(x: int) -> int:
        with open(counter, "a") as f:
            f.write(f"{x}\n")
        if x == 1:
            raise MyError("always", code=x)
        return x

    with pytest.raises(MyError) as caught:
        list(doomed.map(range(2), retries=1, logs="none"))
    assert caught.value.code == 1
    assert isinstance(caught.value.__cause__, hfremote.RemoteTraceback)
    assert "doomed" in caught.value.__cause__.text
    assert counter.read_text().split().count("1") == 2


# -- 7.-10. cancellation -------------------------------------------------------------------------------


def test_first_failure_cancels_the_rest(wide: Emulator) -> None:
    @remote(timeout=120)
    def first_fails(x: int) -> int:
        import time

        if x == 0:
            raise MyError("first", code=0)
        time.sleep(30)
        return x

    with pytest.raises(MyError, match="first"):
        list(first_fails.map(range(6), max_parallel=6, logs="none"))
    final = settled(wide, "first_fails")
    assert sorted(final) == ["CANCELED"] * 5 + ["ERROR"]


def test_a_failure_comes_after_the_results_before_it(wide: Emulator) -> None:
    @remote(timeout=120)
    def third_fails(x: int) -> int:
        import time

        if x == 3:
            raise MyError("three", code=3)
        if x >= 4:
            time.sleep(60)  # the second chunk is still running when the first one's failure is seen
        return x

    got: list[int] = []
    with pytest.raises(MyError, match="three"):
        for value in third_fails.map(range(8), chunksize=4, max_parallel=2, logs="none"):
            got.append(value)
    assert got == [0, 1, 2]  # finished before the failure, in order; the map stopped there
    assert sorted(settled(wide, "third_fails")) == ["CANCELED", "ERROR"]


def test_input_iterator_error_stops_the_map(remote_emulator: Emulator) -> None:
    def three_then_boom() -> Iterator[int]:
        yield from (1, 2, 3)
        raise RuntimeError("boom")

    @remote(timeout=60)
    def ident(x: int) -> int:
        return x

    with pytest.raises(RuntimeError, match="boom"):
        list(ident.map(three_then_boom()))
    assert not any(stage in ACTIVE for stage in stages(remote_emulator, "ident"))


def test_input_iterator_error_cancels_running_jobs(wide: Emulator) -> None:
    """The iterator fails while jobs of the map run: they are cancelled."""

    def inputs() -> Iterator[float]:
        yield from (0, 0, 0, 30)
        # Read again once the window of inputs read so far has jobs: the sleeper's job exists by now.
        poll(lambda: "RUNNING" in stages(wide, "sleeper"), DEADLINE, what="the sleeper to run")
        raise RuntimeError("boom mid-map")

    @remote(timeout=120)
    def sleeper(seconds: float) -> float:
        import time

        time.sleep(seconds)
        return seconds

    with pytest.raises(RuntimeError, match="boom mid-map"):
        list(sleeper.map(inputs(), max_parallel=2))
    final = settled(wide, "sleeper")
    assert "CANCELED" in final, final


@pytest.mark.parametrize("how", ["break", "close"])
def test_leaving_the_loop_early_cancels(wide: Emulator, how: str) -> None:
    @remote(timeout=120)
    def lazy(x: int) -> int:
        import time

        time.sleep(0 if x == 0 else 30)
        return x

    if how == "break":
        for value in lazy.map(range(4), max_parallel=4):
            assert value == 0
            break
    else:
        results = lazy.map(range(4), max_parallel=4)
        assert next(results) == 0
        assert isinstance(results, MapResults)  # close() stops the map
        results.close()
        del results
    gc.collect()
    final = settled(wide, "lazy")
    assert sorted(final) == ["CANCELED"] * 3 + ["COMPLETED"]


CTRL_C_SCRIPT = """
from hfremote import remote


@remote(timeout=300)
def sixty(x):
    import time

    time.sleep(60)
    return x


results = sixty.map(range(3), max_parallel=3, progress=False)
print("MAP-STARTED", flush=True)
for value in results:
    print("result:", value, flush=True)
"""


def interrupted_map(emulator: Emulator, tmp_path: Path, ready: Callable[[], Any]) -> tuple[int, str, str]:
    """Run CTRL_C_SCRIPT in a subprocess and press Ctrl-C once `ready()`: (exit code, stdout, stderr)."""
    proc = start_script(emulator, tmp_path, "ctrl_c_map.py", CTRL_C_SCRIPT)
    try:
        stdout = Lines(proc.stdout)  # type: ignore[arg-type]
        stderr = Lines(proc.stderr)  # type: ignore[arg-type]
        poll(ready, DEADLINE, what="the moment for Ctrl-C")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=DEADLINE)
        return proc.returncode, stdout.rest(), stderr.rest()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ctrl_c_cancels_the_maps_jobs(wide: Emulator, tmp_path: Path) -> None:
    code, out, text = interrupted_map(wide, tmp_path, lambda: stages(wide, "sixty") == ["RUNNING"] * 3)
    assert code != 0
    assert "MAP-STARTED" in out and "result:" not in out
    assert "cancelled 3 unfinished job(s)" in text, text
    # only what Ctrl-C did: no traceback into the HTTP client
    assert "KeyboardInterrupt" not in text and "Traceback" not in text, text
    assert text.splitlines()[-1] == "hfremote: map interrupted; cancelled 3 unfinished job(s)", text
    assert settled(wide, "sixty") == ["CANCELED"] * 3


def test_ctrl_c_while_a_job_is_being_created_cancels_it_too(wide: Emulator, tmp_path: Path) -> None:
    # One creation is answered 429 "retry in 3 s": Ctrl-C comes while it waits, and the job it then
    # creates must be cancelled with the others, not left running.
    rule = wide.faults.add(f"429 POST /api/jobs/{wide.user} count=1 retry-after=3")
    code, _, text = interrupted_map(wide, tmp_path, lambda: rule.fired == 1 and len(map_jobs(wide, "sixty")) == 2)
    assert code != 0
    assert "cancelled 3 unfinished job(s)" in text, text
    assert settled(wide, "sixty") == ["CANCELED"] * 3


# -- 11. logs and progress -------------------------------------------------------------------------------


def test_logs_errors_prints_the_failed_inputs_lines(
    remote_emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    @remote(timeout=60)
    def talkative(x: int) -> int:
        print(f"hello from {x}", flush=True)
        if x == 2:
            raise MyError("two", code=2)
        return x

    got = list(talkative.map(range(4), return_exceptions=True, logs="errors", progress=False))
    assert isinstance(got[2], MyError) and got[:2] + got[3:] == [0, 1, 3]
    err = capsys.readouterr().err
    assert "[input 2] failed (MyError: two (code 2))" in err, err
    assert "[input 2] hello from 2" in err, err
    assert "MyError" in err
    # The job's log names code that travelled by value "<dynamic-code>": shown as this file, with the line.
    assert f'[input 2]   File "{__file__}", line' in err and "<dynamic-code>" not in err, err
    assert '[input 2]     raise MyError("two", code=2)' in err, err
    assert "[input 0]" not in err and "[input 1]" not in err and "[input 3]" not in err


def test_logs_errors_in_a_chunk_prints_that_inputs_traceback(
    remote_emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    @remote(timeout=60)
    def chunked(x: int) -> int:
        print(f"hello from {x}", flush=True)
        if x == 2:
            raise MyError("two", code=2)
        return x

    got = list(chunked.map(range(4), chunksize=4, return_exceptions=True, logs="errors", progress=False))
    assert isinstance(got[2], MyError)
    err = capsys.readouterr().err
    assert "[input 2] failed (MyError: two (code 2))" in err, err
    assert "[input 2] Traceback (most recent call last):" in err, err
    assert "in chunked" in err, err
    assert "hello from" not in err  # the job's log has every input's lines: not shown as this input's


def test_logs_all_prefixes_every_line(remote_emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    @remote(timeout=60)
    def chatter(x: int) -> int:
        for i in range(3):
            print(f"line {i} of {x}", flush=True)
        return x

    assert list(chatter.map(range(4), logs="all", progress=False)) == [0, 1, 2, 3]
    err = capsys.readouterr().out  # the jobs' output, on stdout
    for x in range(4):
        for i in range(3):
            assert f"[input {x}] line {i} of {x}" in err, err
    for line in err.splitlines():
        if "line " in line:
            assert line.startswith("[input "), line


def test_progress_bar(remote_emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    @remote(timeout=60)
    def quiet(x: int) -> int:
        return x

    assert list(quiet.map(range(3), progress=True)) == [0, 1, 2]
    err = capsys.readouterr().err
    for field in ("running=", "queued=", "failed=0"):
        assert field in err, err
    assert re.search(r"cost=(\$0|<\$0\.0001|\$0\.\d+)\]", err), err  # rounded for people
    assert "3/3" in err, err


# -- 12. cost ---------------------------------------------------------------------------------------------


def test_map_cost(remote_emulator: Emulator, api: HfApi) -> None:
    @remote(timeout=600)
    def work(x: int) -> int:
        return x

    flavor = work.settings.flavor
    per_minute = next(row.unit_cost_usd for row in api.list_jobs_hardware() if row.name == flavor)
    cost = work.map_cost(100, chunksize=10)
    assert isinstance(cost, hfremote.CostEstimate)
    assert cost.jobs == 10
    assert cost.flavor == flavor
    assert cost.worst_case_usd == pytest.approx(10 * 600 / 3600 * 60 * per_minute, abs=1e-4)
    assert work.map_cost(range(101), chunksize=10).jobs == 11
    # Every input failing every time: each retry round runs as many jobs again, each job every attempt.
    retried = work.options(attempts=2).map_cost(100, chunksize=10, retries=2)
    assert (retried.jobs, retried.retries, retried.attempts) == (10, 2, 2)
    assert retried.worst_case_usd == pytest.approx(cost.worst_case_usd * 3 * 2, abs=1e-4)
    assert "+ up to 20 for retries" in str(retried) and "2 attempts each" in str(retried)
    with pytest.raises(hfremote.OptionsError, match="chunksize"):
        work.map_cost(10, chunksize=0)


def test_max_cost_on_a_sized_input_refuses_before_any_job(remote_emulator: Emulator) -> None:
    @remote(timeout=600)
    def pricey(x: int) -> int:
        return x

    worst = pricey.map_cost(100, chunksize=10).worst_case_usd
    with pytest.raises(hfremote.OptionsError, match="max_cost_usd"):
        pricey.map(range(100), chunksize=10, max_cost_usd=worst * 0.9)
    assert remote_emulator.jobs() == []
    assert list(pricey.map(range(3), max_cost_usd=worst)) == [0, 1, 2]  # within the limit: runs


def test_max_cost_on_a_generator_stops_when_exceeded(wide: Emulator) -> None:
    @remote(timeout=60)
    def metered(seconds: float) -> float:
        import time

        time.sleep(seconds)
        return seconds

    per_job = metered.map_cost(1).worst_case_usd
    limit = per_job * 5.5  # five jobs' worst case fits, six do not

    def inputs() -> Iterator[float]:
        yield from (0, 0, 0)
        while True:
            yield 30

    with pytest.raises(hfremote.OptionsError, match="max_cost_usd"):
        list(metered.map(inputs(), max_parallel=2, max_cost_usd=limit))
    final = settled(wide, "metered")
    assert 1 <= len(final) <= 5
    assert "CANCELED" in final, final  # the sleeper it had launched


# -- 13. gather / wait / as_completed -----------------------------------------------------------------------


def test_gather_wait_as_completed(remote_emulator: Emulator) -> None:
    @remote(timeout=60)
    def maybe(x: int) -> int:
        if x < 0:
            raise MyError("negative", code=x)
        return x + 100

    remote_futures = [maybe.submit(1), maybe.submit(2)]
    assert all(isinstance(f, RemoteFuture) for f in remote_futures)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        local = pool.submit(lambda: "local")
        futures: list[concurrent.futures.Future[Any]] = [*remote_futures, local]
        assert hfremote.gather(*futures, timeout=DEADLINE) == [101, 102, "local"]
        done, pending = hfremote.wait(futures, timeout=DEADLINE)
        assert done == set(futures) and pending == set()
        assert set(hfremote.as_completed(futures, timeout=DEADLINE)) == set(futures)

        failing = maybe.submit(-5)
        local_fail = pool.submit(lambda: 1 / 0)
        got = hfremote.gather(failing, local, local_fail, return_exceptions=True, timeout=DEADLINE)
        assert isinstance(got[0], MyError) and got[0].code == -5
        assert isinstance(got[0].__cause__, hfremote.RemoteTraceback)
        assert got[1] == "local"
        assert isinstance(got[2], ZeroDivisionError)
        with pytest.raises(MyError):
            hfremote.gather(failing, local, timeout=DEADLINE)
        pair: list[concurrent.futures.Future[Any]] = [failing, local_fail]
        first = next(hfremote.as_completed(pair, timeout=DEADLINE))
        assert first in (failing, local_fail)
        done, pending = hfremote.wait([failing, local], return_when="FIRST_COMPLETED", timeout=DEADLINE)
        assert done and done <= {failing, local}
