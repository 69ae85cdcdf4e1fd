"""hfremote end to end: real functions run as real jobs (local processes with real `uv`) on the emulator.

Covers values coming back (closures, lambdas, dataclasses, local helper modules, large payloads), the
user's exceptions coming back as themselves, timeouts, cancellation, jobs that cannot start,
re-attaching from another process, Ctrl-C on a blocking call, logs/metrics/cost, and labels.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib
import inspect
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import Lines, MyError, poll, start_script, subprocess_env, wait_stage
from huggingface_hub import HfApi

import hfremote
from hfremote import RemoteFunction, RemoteFuture, remote
from hfremote.emulator import Emulator

pytestmark = pytest.mark.usefixtures("remote_emulator")

RESULT_TIMEOUT = 120  # generous: a deadline, not a timed assertion


# -- things defined in this module (shipped to the job by value) -----------------------------------------


@dataclass
class Point:
    x: int
    y: int
    tag: str = ""

    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)


class LockedError(Exception):
    """An exception that cannot be pickled: it holds a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class MismatchedInitError(Exception):
    """Pickles fine, but cannot be re-created from its args (its __init__ takes two, args holds one)."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"a={a} b={b}")


def raise_my_error(n: int) -> None:
    if n > 1:
        raise MyError(f"n={n} is too big", code=n)  # RAISE-LINE


def raise_locked(n: int) -> None:
    raise LockedError(f"locked out at {n}")


# -- helpers ------------------------------------------------------------------------------------------


Call = Callable[..., Any]


@pytest.fixture(params=["blocking", "submit"])
def call(request: pytest.FixtureRequest) -> Call:
    """Call a RemoteFunction either way: `f(...)` (blocking, streams logs) or `f.submit(...).result()`."""

    def blocking(fn: RemoteFunction[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    def submitted(fn: RemoteFunction[..., Any], *args: Any, **kwargs: Any) -> Any:
        future = fn.submit(*args, **kwargs)
        assert isinstance(future, RemoteFuture)
        return future.result(timeout=RESULT_TIMEOUT)

    return blocking if request.param == "blocking" else submitted


def job_record(emulator: Emulator, job_id: str) -> dict[str, Any]:
    [record] = [job for job in emulator.jobs() if job["id"] == job_id]
    return record


# -- 1. a zoo of functions ------------------------------------------------------------------------------


def test_closure_capturing_a_local(call: Call) -> None:
    base = {"offset": 40}
    scale = 3

    @remote(timeout=60)
    def add(a: int) -> int:
        return a * scale + base["offset"]

    assert call(add, 1) == 43
    assert call(add, -10) == 10


def test_lambda_passed_to_remote(call: Call) -> None:
    square = remote(lambda v: v * v, timeout=60)
    assert call(square, 12) == 144
    assert call(square, 1.5) == 2.25


def test_nested_function_calling_nested_function(call: Call) -> None:
    def inner(s: str) -> str:
        return s[::-1]

    def outer(s: str) -> str:
        def deepest(t: str) -> str:
            return t.upper()

        return deepest(inner(s)) + "!"

    fn = remote(outer, timeout=60)
    assert call(fn, "abc") == "CBA!"


def test_dataclass_result(call: Call) -> None:
    @remote(timeout=60)
    def make_point(x: int, y: int) -> Point:
        p = Point(x, y, tag="made remotely")
        assert p.norm1() == abs(x) + abs(y)
        return p

    result = call(make_point, 3, -4)
    assert isinstance(result, Point)
    assert result == Point(3, -4, "made remotely")
    assert result.norm1() == 7


def test_dataclass_argument_and_result(call: Call) -> None:
    @remote(timeout=60)
    def flip(p: Point) -> Point:
        return Point(p.y, p.x, tag=p.tag + "-flipped")

    assert call(flip, Point(1, 2, "p")) == Point(2, 1, "p-flipped")


def test_keyword_only_and_default_arguments(call: Call) -> None:
    @remote(timeout=60)
    def describe(a: int, b: int = 10, *args: int, c: str = "c", d: tuple[int, ...] = (1, 2), **extra: Any) -> dict:
        return {"a": a, "b": b, "args": args, "c": c, "d": d, "extra": extra}

    assert call(describe, 1) == {"a": 1, "b": 10, "args": (), "c": "c", "d": (1, 2), "extra": {}}
    assert call(describe, 1, 2, 3, 4, c="x", z=9) == {
        "a": 1,
        "b": 2,
        "args": (3, 4),
        "c": "x",
        "d": (1, 2),
        "extra": {"z": 9},
    }


def test_wrong_arguments_fail_before_any_job(remote_emulator: Emulator) -> None:
    @remote(timeout=60)
    def kw_only(a: int, *, b: int) -> int:
        return a + b

    before = len(remote_emulator.jobs())
    with pytest.raises(TypeError, match="kw_only"):
        kw_only.submit(1, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        kw_only(1)  # type: ignore[call-arg]
    assert len(remote_emulator.jobs()) == before


@pytest.fixture
def helper_module(tmp_path: Path) -> Iterator[Any]:
    """A module that exists only in a temp dir on this side: the job must get it by value."""
    name = f"helper_mod_{uuid.uuid4().hex[:12]}"
    folder = tmp_path / "helpers-only-here"
    folder.mkdir()
    (folder / f"{name}.py").write_text(
        textwrap.dedent(
            """
            SALT = "pepper"

            def triple(x):
                return 3 * x

            class Box:
                def __init__(self, value):
                    self.value = value

                def salted(self):
                    return f"{SALT}:{self.value}"
            """
        )
    )
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(name, None)


def test_local_helper_module_travels_by_value(call: Call, helper_module: Any) -> None:
    helper = helper_module
    name = helper.__name__

    @remote(timeout=60)
    def use_helper(x: int) -> tuple[int, str, bool]:
        import importlib.util

        importable = importlib.util.find_spec(name) is not None  # the job has no copy of the module file
        return helper.triple(x), helper.Box(x).salted(), importable

    assert call(use_helper, 5) == (15, "pepper:5", False)


def test_function_imported_from_local_helper_module(call: Call, helper_module: Any) -> None:
    triple = helper_module.triple
    box = helper_module.Box

    def uses_names(x: int) -> Any:
        return triple(x) + 1, box(x)

    value, result_box = call(remote(uses_names, timeout=60), 2)
    assert value == 7
    assert result_box.salted() == "pepper:2"


def test_50_mb_argument(call: Call) -> None:
    data = os.urandom(50 * 1024 * 1024)

    @remote(timeout=120)
    def digest(blob: bytes) -> tuple[int, str]:
        import hashlib

        return len(blob), hashlib.sha256(blob).hexdigest()

    assert call(digest, data) == (len(data), hashlib.sha256(data).hexdigest())


def test_20_mb_result(call: Call) -> None:
    @remote(timeout=120)
    def big(n: int, seed: bytes) -> bytes:
        import hashlib

        block = hashlib.sha512(seed).digest()  # 64 bytes
        return (block * (n // len(block) + 1))[:n]

    n = 20 * 1024 * 1024 + 3
    value = call(big, n, b"seed")
    block = hashlib.sha512(b"seed").digest()
    assert len(value) == n
    assert value == (block * (n // 64 + 1))[:n]


# -- 2. exceptions ---------------------------------------------------------------------------------------


def test_user_exception_comes_back_as_itself(call: Call) -> None:
    @remote(timeout=60)
    def checked(n: int) -> int:
        raise_my_error(n)
        return n

    assert call(checked, 1) == 1
    with pytest.raises(MyError) as caught:
        call(checked, 7)
    error = caught.value
    assert error.code == 7
    assert str(error) == "n=7 is too big (code 7)"
    cause = error.__cause__
    assert isinstance(cause, hfremote.RemoteTraceback)
    lines, start = inspect.getsourcelines(raise_my_error)
    raise_line = start + next(i for i, text in enumerate(lines) if "RAISE-LINE" in text)
    assert "raise_my_error" in cause.text
    assert "checked" in cause.text
    assert f"line {raise_line}" in cause.text
    assert "MyError" in cause.text
    # Code that travelled by value is pointed back at this file, with its source line, as locally.
    raise_source = lines[raise_line - start].strip()
    assert f'File "{__file__}", line {raise_line}, in raise_my_error\n    {raise_source}\n' in cause.text, cause.text
    assert "<dynamic-code>" not in cause.text


def test_builtin_exception_comes_back_as_itself(call: Call) -> None:
    @remote(timeout=60)
    def lookup(key: str) -> int:
        return {"a": 1}[key]

    with pytest.raises(KeyError, match="missing") as caught:
        call(lookup, "missing")
    assert isinstance(caught.value.__cause__, hfremote.RemoteTraceback)
    assert "lookup" in caught.value.__cause__.text


def test_an_exception_with_an_unpicklable_attribute_comes_back_as_itself(call: Call) -> None:
    @remote(timeout=60)
    def locked(n: int) -> int:
        raise_locked(n)
        return n

    with pytest.raises(LockedError) as caught:
        call(locked, 3)
    error = caught.value
    assert str(error) == "locked out at 3" and not hasattr(error, "lock")
    assert any("lock" in note for note in error.__notes__)  # what could not travel is said
    assert isinstance(error.__cause__, hfremote.RemoteTraceback)
    assert "raise_locked" in error.__cause__.text


def test_exception_that_cannot_be_recreated_by_pickle_comes_back_as_itself(call: Call) -> None:
    @remote(timeout=60)
    def mismatched(n: int) -> int:
        raise MismatchedInitError(n, n + 1)

    with pytest.raises(MismatchedInitError) as caught:
        call(mismatched, 4)
    error = caught.value
    assert str(error) == "a=4 b=5"
    assert isinstance(error.__cause__, hfremote.RemoteTraceback)
    assert "mismatched" in error.__cause__.text


def test_unpicklable_result_is_a_clear_error(call: Call) -> None:
    @remote(timeout=60)
    def make_lock() -> Any:
        import threading

        return threading.Lock()

    with pytest.raises(hfremote.PicklingError, match="cannot be pickled"):
        call(make_lock)


# -- 3. timeout ------------------------------------------------------------------------------------------


def test_timeout_is_a_job_failure() -> None:
    @remote(timeout=2)
    def sleepy() -> str:

        time.sleep(30)
        return "woke up"

    future = sleepy.submit()
    with pytest.raises(hfremote.JobFailedError) as caught:
        future.result(timeout=RESULT_TIMEOUT)
    error = caught.value
    assert error.stage == "ERROR"
    assert error.message is not None and "timed out" in error.message.lower()
    assert error.job_id == future.job_id
    assert error.url and future.job_id in error.url
    assert future.stage == "ERROR"


def test_a_jobs_end_completes_its_future_before_the_next_poll(host_remote_emulator: Emulator, tmp_path: Path) -> None:
    # The job waits for a file on the host: a host process (sandbox off) can see it.
    # Polls 2 s apart, then further: the watcher follows the running job's log stream, which ends with
    # the job, so the result comes without a second listing.
    hfremote.configure(endpoint=host_remote_emulator.endpoint, token=host_remote_emulator.token, poll_interval=2.0)
    marker = tmp_path / "go"

    @remote(timeout=120)
    def waits_for(path: str) -> str:
        while not os.path.exists(path):
            time.sleep(0.02)
        return "done"

    ns = host_remote_emulator.user
    waits_for.submit(str(tmp_path)).result(timeout=60)  # the process's first run also looks for stale runs:
    for sweep in list(hfremote._function._swept.values()):  # let that listing be over before counting
        sweep.join(30)
    since = len(host_remote_emulator.requests())
    future = waits_for.submit(str(marker))
    stream = f"/api/jobs/{ns}/{future.job_id}/logs"
    poll(lambda: any(p == stream for _, _, p, _ in host_remote_emulator.requests()[since:]), 30, what="the end stream")
    marker.touch()
    assert future.result(timeout=60) == "done"
    listings = [p for _, m, p, _ in host_remote_emulator.requests()[since:] if m == "GET" and p == f"/api/jobs/{ns}"]
    assert len(listings) == 1  # the tick that saw the job running; its end came through the stream


# -- 4. cancel -------------------------------------------------------------------------------------------


def test_cancel_a_running_future(remote_emulator: Emulator, api: HfApi) -> None:
    @remote(timeout=120, flavor="a100-large")  # a high price per minute makes the cost check sharp
    def sleeper() -> str:

        time.sleep(60)
        return "done"

    future = sleeper.submit()
    poll(lambda: future.stage == "RUNNING", timeout=60, what="the job to run")
    assert not future.done()
    assert future.cancel() is True
    assert future.cancelled()
    assert future.done()
    with pytest.raises(concurrent.futures.CancelledError):
        future.result(timeout=1)
    final = wait_stage(api, future.job_id, remote_emulator.user, ("CANCELED",))
    assert job_record(remote_emulator, future.job_id)["status"]["stage"] == "CANCELED"
    # The cost of a cancelled job stops growing: it is that of its running time.
    assert final.started_at is not None and final.finished_at is not None
    [price] = [hw.unit_cost_usd for hw in api.list_jobs_hardware() if hw.name == final.flavor]
    expected = round(price * (final.finished_at - final.started_at).total_seconds() / 60.0, 6)
    assert future.cost == pytest.approx(expected, abs=2e-6)
    assert future.stage == "CANCELED"
    assert future.cancel() is True  # cancelling again is harmless


def test_cancel_after_completion_returns_false(remote_emulator: Emulator) -> None:
    fn = remote(lambda: "quick", timeout=60)
    future = fn.submit()
    assert future.result(timeout=RESULT_TIMEOUT) == "quick"
    assert future.cancel() is False
    assert not future.cancelled()
    assert job_record(remote_emulator, future.job_id)["status"]["stage"] == "COMPLETED"


# -- 5. a job that cannot start its function ------------------------------------------------------------


def test_missing_dependency_is_a_job_failure(call: Call) -> None:
    @remote(timeout=60, dependencies=["this-package-does-not-exist-hfremote==0.0.1"])
    def never_runs() -> int:
        return 1

    with pytest.raises(hfremote.JobFailedError) as caught:
        call(never_runs)
    error = caught.value
    assert error.stage == "ERROR"
    assert error.job_id and error.url
    tail = "\n".join(error.log_tail)
    assert "this-package-does-not-exist-hfremote" in tail
    assert "this-package-does-not-exist-hfremote" in str(error)


# -- 6. re-attach from another process ------------------------------------------------------------------


def test_attach_from_a_second_process(remote_emulator: Emulator, tmp_path: Path) -> None:
    @remote(timeout=60)
    def slow_answer(x: int) -> dict[str, int]:

        time.sleep(2)
        return {"answer": x * 2}

    future = slow_answer.submit(21)
    code = (
        "import sys\n"
        "from hfremote import RemoteFuture\n"
        "f = RemoteFuture.attach(sys.argv[1])\n"
        "print(f.name)\n"
        "print(f.result(timeout=120))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, future.job_id],
        env=subprocess_env(remote_emulator, tmp_path / "hf-home"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["slow_answer", "{'answer': 42}"]
    assert future.result(timeout=RESULT_TIMEOUT) == {"answer": 42}


def test_attach_here_after_completion() -> None:
    fn = remote(lambda: [1, 2, 3], timeout=60)
    first = fn.submit()
    assert first.result(timeout=RESULT_TIMEOUT) == [1, 2, 3]
    again = RemoteFuture.attach(first.job_id)
    assert again.result(timeout=RESULT_TIMEOUT) == [1, 2, 3]
    assert again.run_id == first.run_id and again.call == first.call


def test_attach_refuses_a_job_hfremote_did_not_start(remote_emulator: Emulator, api: HfApi) -> None:
    job = api.run_job(image="python:3.12", command=["python", "-c", "print(1)"], namespace=remote_emulator.user)
    with pytest.raises(hfremote.HFRemoteError, match="not started by hfremote"):
        RemoteFuture.attach(job.id)


# -- 7. Ctrl-C on a blocking call -----------------------------------------------------------------------


CTRL_C_SCRIPT = """
import sys

from hfremote import remote


@remote(timeout=120, detach={detach})
def napper():
    import time

    print("MARKER-napping-now", flush=True)
    time.sleep(60)
    return "woke"


print("result:", napper())
"""


@pytest.mark.parametrize("detach", [False, True])
def test_ctrl_c_on_a_blocking_call(remote_emulator: Emulator, api: HfApi, tmp_path: Path, detach: bool) -> None:
    proc = start_script(remote_emulator, tmp_path, "ctrl_c.py", CTRL_C_SCRIPT.format(detach=detach))
    try:
        stdout = Lines(proc.stdout)  # type: ignore[arg-type]
        stdout.wait_for(r"^MARKER-napping-now$")  # the job's output comes out on stdout, as it is
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        text = proc.stderr.read() if proc.stderr else ""
        out = stdout.rest()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert out.splitlines() == ["MARKER-napping-now"]
    # stderr, line by line: where the job is, its stages, then only what Ctrl-C did (no traceback)
    lines = text.splitlines()
    first = re.fullmatch(r"hfremote: napper: job ([0-9a-f]+) of run (\S+) \((http://\S+/jobs/\S+)\)", lines[0])
    assert first, text
    job_id, run_id, url = first.groups()
    assert url.endswith(job_id)
    assert lines[1] == "hfremote: napper: scheduling", text
    rest = lines[2:]
    # then the job's stage and its environment's set-up (uv's summary, when it installed anything)
    while rest and re.fullmatch(r"hfremote: napper: (running \(after \d+\.\ds\)|dependencies: .*)", rest[0]):
        rest.pop(0)
    if detach:
        assert rest == [
            f"hfremote: detached; job {job_id} keeps running ({url}). Follow it with `hfremote attach {run_id}`"
        ], text
    else:
        assert rest == [f"hfremote: cancelled job {job_id} ({url})"], text
    ns = remote_emulator.user
    if detach:
        assert api.inspect_job(job_id=job_id, namespace=ns).status.stage == "RUNNING"
        assert job_record(remote_emulator, job_id)["status"]["stage"] == "RUNNING"
        api.cancel_job(job_id=job_id, namespace=ns)
    assert wait_stage(api, job_id, ns, ("CANCELED",)).status.stage == "CANCELED"


# -- 8. logs, metrics, cost, concurrent.futures ---------------------------------------------------------


def test_logs_after_completion() -> None:
    @remote(timeout=60)
    def chatty(n: int) -> int:
        import sys

        for i in range(n):
            print(f"line {i}")
        print("to stderr", file=sys.stderr)
        return n

    future = chatty.submit(3)
    assert future.result(timeout=RESULT_TIMEOUT) == 3
    lines = list(future.logs())
    for expected in ("line 0", "line 1", "line 2", "to stderr"):
        assert expected in lines
    assert lines.index("line 0") < lines.index("line 1") < lines.index("line 2")
    followed = list(future.logs(follow=True))  # following a finished job returns at once, same lines
    assert followed == lines


def test_metrics_of_a_busy_job() -> None:
    @remote(timeout=120)
    def burn(seconds: float) -> int:

        end, n = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            n += 1
        return n

    future = burn.submit(60.0)
    try:
        poll(lambda: future.stage == "RUNNING", timeout=60, what="the job to run")
        sample = poll(future.metrics, timeout=30, what="a metrics sample")
        assert isinstance(sample, dict)
        assert isinstance(sample["cpu_usage_pct"], (int, float))
        assert sample["cpu_usage_pct"] >= 0
        busy = poll(
            lambda: (m := future.metrics()) is not None and m["cpu_usage_pct"] > 0,
            timeout=30,
            what="a sample showing CPU use",
        )
        assert busy
    finally:
        future.cancel()
    assert future.cancelled()


def test_cost_after_completion() -> None:
    fn = remote(lambda: "paid", timeout=60)
    future = fn.submit()
    assert future.result(timeout=RESULT_TIMEOUT) == "paid"
    cost = future.cost
    assert isinstance(cost, float)
    assert cost >= 0
    assert future.cost == cost  # the job has ended: its cost no longer grows


def test_concurrent_futures_wait_and_as_completed() -> None:
    @remote(timeout=60)
    def echo(x: int) -> int:
        return x * 10

    futures = [echo.submit(i) for i in range(4)]
    assert len({f.job_id for f in futures}) == 4
    assert sorted(f.result(timeout=RESULT_TIMEOUT) for f in concurrent.futures.as_completed(futures, 120)) == [
        0,
        10,
        20,
        30,
    ]
    done, not_done = concurrent.futures.wait(futures, timeout=RESULT_TIMEOUT)
    assert done == set(futures) and not not_done

    more = [echo.submit(i) for i in (7, 8)]
    done, not_done = concurrent.futures.wait(
        more, timeout=RESULT_TIMEOUT, return_when=concurrent.futures.FIRST_COMPLETED
    )
    assert done and done <= set(more)
    assert {f.result(timeout=RESULT_TIMEOUT) for f in more} == {70, 80}


# -- 9. labels --------------------------------------------------------------------------------------------


def test_labels(remote_emulator: Emulator, api: HfApi) -> None:
    @remote(timeout=60, labels={"team": "zoo"})
    def labelled(x: int) -> int:
        return x

    future = labelled.submit(1)
    assert future.result(timeout=RESULT_TIMEOUT) == 1
    labels = api.inspect_job(job_id=future.job_id, namespace=remote_emulator.user).labels or {}
    assert labels["hfremote-run"] == future.run_id
    assert labels["hfremote-call"] == "0-1"  # the chunk: input 0, one input
    assert labels["hfremote-function"] == f"{__name__}-test_labels-locals-labelled"
    assert labels["name"] == "labelled"
    assert labels["team"] == "zoo"

    renamed = labelled.options(name="custom name!")
    other = renamed.submit(2)
    assert other.result(timeout=RESULT_TIMEOUT) == 2
    labels = api.inspect_job(job_id=other.job_id, namespace=remote_emulator.user).labels or {}
    assert labels["name"] == "custom-name"
    assert labels["hfremote-run"] == other.run_id != future.run_id
    jobs = api.list_jobs(namespace=remote_emulator.user, labels={"hfremote-run": future.run_id})
    assert [job.id for job in jobs] == [future.job_id]


@remote(timeout=60)
def stops_itself(how: str) -> None:
    raise KeyboardInterrupt("stopped in the job") if how == "interrupt" else SystemExit(3)


def test_an_interrupt_raised_by_the_function_is_its_failure_not_a_ctrl_c(
    remote_emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(KeyboardInterrupt, match="stopped in the job"):
        stops_itself("interrupt")
    with pytest.raises(SystemExit) as exited:
        stops_itself("exit")
    assert exited.value.code == 3
    err = capsys.readouterr().err
    assert "cancelled job" not in err and "interrupted" not in err, err
    assert [j["status"]["stage"] for j in remote_emulator.jobs()] == ["ERROR", "ERROR"]


@remote(timeout=600, env={"HFREMOTE_LINGER_SECONDS": "1"})
def leaves_a_thread(x: int) -> int:
    import threading

    threading.Thread(target=threading.Event().wait, name="forever", daemon=False).start()
    return x + 1


def test_a_thread_left_running_does_not_keep_the_job_billing(remote_emulator: Emulator, api: HfApi) -> None:
    future = leaves_a_thread.submit(1)
    assert future.result(timeout=120) == 2
    info = poll(
        lambda: (
            (i := api.inspect_job(job_id=future.job_id, namespace=remote_emulator.user)).status.stage
            in ("COMPLETED", "ERROR")
            and i
        ),
        timeout=60,
        what="the job to end",
    )
    assert info.status.stage == "COMPLETED"
    assert any("thread(s) forever still run" in line for line in future.logs())


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str broke")


@remote(timeout=60, stream_logs=False)
def raises_bad_str(x: int) -> None:
    raise BadStr(x)


def test_an_exception_whose_str_fails_comes_back_as_itself(remote_emulator: Emulator) -> None:
    error = raises_bad_str.submit(1).exception(timeout=120)
    assert type(error).__name__ == "BadStr" and error is not None and error.args == (1,)
