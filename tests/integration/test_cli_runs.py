"""The `hfremote` command's run verbs, as subprocesses against a running emulator (HF_ENDPOINT)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import Lines, poll, subprocess_env
from huggingface_hub import HfApi

from hfremote.emulator import Emulator

HFREMOTE = [sys.executable, "-m", "hfremote.cli"]

JOBS = """
from typing import Literal

from hfremote import remote


@remote(timeout="5m")
def train(lr: float, epochs: int = 2, tags: list[str] | None = None, fp16: bool = False,
          mode: Literal["fast", "slow"] = "fast") -> dict:
    import sys

    print(f"training lr={lr}")
    print("a warning", file=sys.stderr)
    for i in range(10):
        print(f"out {i}")
        print(f"err {i}", file=sys.stderr)
    print("\\x1b[31mred\\x1b[0m nul:\\x00.")
    return {"lr": lr, "epochs": epochs, "tags": tags, "fp16": fp16, "mode": mode}


@remote
def boom(n: int) -> None:
    print("about to fail")
    raise ValueError(f"bad {n}")


@remote(timeout="5m")
def napper(seconds: float) -> str:
    import time

    print("MARKER-napping", flush=True)
    time.sleep(seconds)
    return "woke"


@remote(timeout="5m")
def bar(steps: int) -> str:
    for i in range(steps + 1):
        print(f"\\r{i}/{steps}", end="", flush=True)  # what tqdm writes
    print()
    print("after the bar")
    return "done"


@remote
class Model:
    def predict(self, x: int) -> int:
        return x


@remote.schedule("@daily", name="nightly", timeout="5m")
def nightly(board: str, top: int = 3) -> str:
    return board * top
"""


@pytest.fixture
def cli(emulator: Emulator, tmp_path: Path) -> Any:
    (tmp_path / "jobs.py").write_text(JOBS)
    env = subprocess_env(emulator, tmp_path / "hf-home")

    def run(
        *args: str, timeout: float = 120, environ: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*HFREMOTE, *args],
            env=environ or env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    run.env = env  # type: ignore[attr-defined]
    run.cwd = tmp_path  # type: ignore[attr-defined]
    return run


def test_run_with_typed_arguments(cli: Any) -> None:
    proc = cli("run", "jobs.py::train", "--lr", "3e-4", "--epochs", "3", "--tags", "a", "b", "--fp16", "--mode", "slow")
    assert proc.returncode == 0, proc.stderr
    # stdout: the job's lines (control characters neutralised), then the value's repr
    # The platform's logs do not say which stream a line came from: the job's stdout and stderr lines
    # both come out on stdout, in the order the job printed them.
    assert proc.stdout.splitlines() == [
        "training lr=0.0003",
        "a warning",
        *[line for i in range(10) for line in (f"out {i}", f"err {i}")],
        "\\x1b[31mred\\x1b[0m nul:\\x00.",
        repr({"lr": 3e-4, "epochs": 3, "tags": ["a", "b"], "fp16": True, "mode": "slow"}),
    ]
    err = proc.stderr.splitlines()
    first = re.fullmatch(r"hfremote: train: job ([0-9a-f]+) of run (\S+) \((http://\S+)\)", err[0])
    assert first, proc.stderr
    assert err[1] == "hfremote: train: scheduling"
    assert all(line.startswith("hfremote: train: ") for line in err), proc.stderr


def test_run_refuses_bad_arguments_before_any_job(cli: Any, emulator: Emulator) -> None:
    proc = cli("run", "jobs.py::train", "--epochs", "x")
    assert proc.returncode == 2
    assert "--lr" in proc.stderr and "invalid int value: 'x'" in proc.stderr
    proc = cli("run", "jobs.py::nothing")
    assert proc.returncode == 2 and "jobs.py has no function 'nothing'" in proc.stderr
    assert "train" in proc.stderr
    proc = cli("run", "jobs.py::Model")
    assert proc.returncode == 2 and "Model is a class: `hfremote run` runs functions" in proc.stderr
    assert emulator.jobs() == []


def test_a_failure_prints_its_remote_traceback_once(cli: Any) -> None:
    proc = cli("run", "jobs.py::boom", "--n", "3")
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == ["about to fail"]
    err = proc.stderr.splitlines()
    assert err[0].startswith("hfremote: boom: job ")
    assert err[1] == "hfremote: boom: scheduling"
    stages = 2
    while err[stages].startswith("hfremote: boom: "):  # the stages the engine saw: running, error (timing)
        assert re.fullmatch(r"hfremote: boom: (running \(after \d+\.\ds\)|dependencies: .*|error: .*)", err[stages])
        stages += 1
    rest = err[stages:]
    line = JOBS.splitlines().index('    raise ValueError(f"bad {n}")') + 1
    assert rest == [
        "hfremote.errors.RemoteTraceback: ",
        '"""',
        "Traceback (most recent call last):",
        f'  File "{Path(cli.cwd, "jobs.py")}", line {line}, in boom',
        '    raise ValueError(f"bad {n}")',
        "ValueError: bad 3",
        '"""',
        "",
        "The above exception was the direct cause of the following exception:",
        "",
        "ValueError: bad 3",
    ], proc.stderr
    assert proc.stderr.count("Traceback (most recent call last)") == 1
    assert "entry.py" not in proc.stderr


def test_verbs_on_a_run_made_by_another_process(cli: Any, emulator: Emulator) -> None:
    started = cli("run", "--detach", "jobs.py::napper", "--seconds", "60")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    assert re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{6}", run_id)
    api = HfApi(endpoint=emulator.endpoint, token=emulator.token)
    poll(lambda: any("MARKER-napping" in line for line in _job_logs(api, emulator, run_id)), what="the job's output")

    ps = cli("ps", "--json")
    rows = json.loads(ps.stdout)
    assert [row["run_id"] for row in rows] == [run_id]
    assert rows[0]["jobs"] == {"RUNNING": 1} and rows[0]["function"] == "jobs-napper"
    table = cli("ps").stdout.splitlines()
    assert table[0].split() == ["RUN", "FUNCTION", "JOBS", "STARTED", "COST"]
    assert table[1].startswith(f"{run_id}  jobs-napper  running=1")

    logs = cli("logs", run_id)
    assert logs.returncode == 0 and logs.stdout.splitlines() == ["MARKER-napping"], logs.stderr

    # attach follows the run: the cancel from a third process ends it, attach says so
    attach = subprocess.Popen(
        [*HFREMOTE, "attach", run_id],
        env=cli.env,
        cwd=cli.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        Lines(attach.stdout).wait_for("^MARKER-napping$")  # type: ignore[arg-type]
        cancel = cli("cancel", run_id)
        assert cancel.returncode == 0 and cancel.stdout.strip() == f"cancelled 1 job(s) of run {run_id}"
        attach.wait(60)
        err = attach.stderr.read() if attach.stderr else ""
    finally:
        if attach.poll() is None:
            attach.kill()
            attach.wait()
    assert attach.returncode == 1
    assert err.splitlines()[0] == f"hfremote: attached to run {run_id}: 1 of 1 job(s) unfinished"
    assert f"hfremote: run {run_id} failed:" in err

    assert cli("ps").stdout.startswith("no runs running")
    assert "canceled=1" in cli("ps", "--all").stdout
    again = cli("cancel", run_id)
    assert again.stdout.strip() == f"run {run_id} has no unfinished job: nothing to cancel"

    # result of a finished run and of a job, by another process; -o writes the value
    done = cli("run", "--detach", "jobs.py::train", "--lr", "0.5")
    done_id = done.stdout.strip()
    result = cli("result", done_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == repr({"lr": 0.5, "epochs": 2, "tags": None, "fp16": False, "mode": "fast"})
    job_id = next(iter(api.list_jobs(namespace=emulator.user, labels={"hfremote-run": done_id}))).id
    assert cli("result", job_id).stdout == result.stdout
    out = Path(cli.cwd, "value.pkl")
    assert cli("result", done_id, "-o", str(out)).returncode == 0
    import cloudpickle

    assert cloudpickle.loads(out.read_bytes())["lr"] == 0.5
    unknown = cli("logs", "20200101T000000-abcdef")
    assert unknown.returncode == 2 and "no run '20200101T000000-abcdef'" in unknown.stderr


def _job_logs(api: HfApi, emulator: Emulator, run_id: str) -> list[str]:
    jobs = api.list_jobs(namespace=emulator.user, labels={"hfremote-run": run_id})
    return [line for job in jobs for line in api.fetch_job_logs(job_id=job.id, namespace=emulator.user)]


def test_gc_spares_running_runs_and_schedules(cli: Any, emulator: Emulator) -> None:
    finished = cli("run", "--detach", "jobs.py::train", "--lr", "1").stdout.strip()
    assert cli("result", finished).returncode == 0
    running = cli("run", "--detach", "jobs.py::napper", "--seconds", "60").stdout.strip()
    deployed = cli("deploy", "jobs.py::nightly", "--board", "x")
    assert deployed.returncode == 0 and deployed.stdout.startswith("created"), deployed.stderr
    api = HfApi(endpoint=emulator.endpoint, token=emulator.token)
    bucket = f"{emulator.user}/hfremote"

    def folders() -> set[str]:
        return {"/".join(f.path.split("/")[:2]) for f in api.list_bucket_tree(bucket, recursive=True)}

    before = folders()
    assert {f"runs/{finished}", f"runs/{running}"} <= before
    assert any(f.startswith("schedules/") for f in before)
    dry = cli("gc", "--older-than", "0s", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[0].startswith(f"would delete runs/{finished}/ (")
    assert folders() == before
    gc = cli("gc", "--older-than", "0s")
    assert gc.returncode == 0, gc.stderr
    assert f"deleting runs/{finished}/" in gc.stdout and "freed 1 run folder(s)" in gc.stdout, gc.stdout
    assert "kept 1 running" in gc.stdout
    assert folders() == before - {f"runs/{finished}"}
    young = cli("gc")  # the default --older-than 7d keeps everything made today
    assert "freed 0 run folder(s)" in young.stdout
    assert cli("cancel", running).returncode == 0
    bad = cli("gc", "--older-than", "soon")
    assert bad.returncode == 2 and "--older-than 'soon'" in bad.stderr


def test_deploy_without_a_backend_is_refused(cli: Any, tmp_path: Path, emulator: Emulator) -> None:
    env = {k: v for k, v in cli.env.items() if k not in ("HF_ENDPOINT", "HF_TOKEN")}
    env["HF_HOME"] = str(tmp_path / "empty-home")  # no saved token either
    proc = cli("deploy", "jobs.py", environ=env)
    assert proc.returncode == 2
    assert proc.stderr.startswith("hfremote deploy: no Hugging Face token and no HF_ENDPOINT")
    assert "hf auth login" in proc.stderr and "hfremote emulator" in proc.stderr
    assert "created" not in proc.stdout
    for verb in (["ps"], ["gc"], ["logs", "x"]):
        assert cli(*verb, environ=env).returncode == 2


def test_deploy_takes_the_function_arguments(cli: Any) -> None:
    missing = cli("deploy", "jobs.py")
    assert missing.returncode == 2
    assert "the following arguments are required: --board" in missing.stderr
    assert "Traceback" not in missing.stderr
    done = cli("deploy", "jobs.py", "--board", "open-llm", "--top", "2")
    assert done.returncode == 0, done.stderr
    assert re.match(r"created +nightly  @daily  \(scheduled job [0-9a-f]+\)", done.stdout)


def test_hardware_version_and_help(cli: Any) -> None:
    hardware = cli("hardware")
    rows = hardware.stdout.splitlines()
    assert rows[0].split() == ["FLAVOR", "NAME", "PRICE/HOUR"]
    assert any(re.match(r"cpu-basic +CPU Basic +\$\d+\.\d\d$", row) for row in rows), hardware.stdout
    assert "cpu-basic" in json.loads(cli("hardware", "--json").stdout)
    from importlib.metadata import version

    assert cli("--version").stdout.strip() == f"hfremote {version('hfremote')}"
    for verb in ("run", "ps", "logs", "cancel", "result", "attach", "gc", "hardware", "deploy", "schedules"):
        assert cli(verb, "--help").returncode == 0
    usage = cli("run", "jobs.py::train", "--help").stdout
    assert "--lr FLOAT" in usage and "--fp16, --no-fp16" in usage and "--flavor" in usage


def test_the_command_loads_without_the_emulator_or_the_client() -> None:
    heavy = "('huggingface_hub', 'hfremote.emulator', 'starlette')"
    code = f"import sys, hfremote.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.strip() == "[]"


def test_a_progress_bar_is_a_live_line_on_a_terminal_and_its_last_state_elsewhere(cli: Any, emulator: Emulator) -> None:
    piped = cli("run", "jobs.py::bar", "--steps", "5")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.splitlines() == ["5/5", "after the bar", "'done'"]
    # on the platform, each update is a log line of its own (so it arrives as it happens)
    api = HfApi(endpoint=emulator.endpoint, token=emulator.token)
    run_id = re.search(r"of run (\S+) ", piped.stderr)[1]  # type: ignore[index]
    assert _job_logs(api, emulator, run_id)[:7] == [f"\r{i}/5" for i in range(6)] + ["after the bar"]

    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [*HFREMOTE, "run", "jobs.py::bar", "--steps", "3"],
        env=cli.env,
        cwd=cli.cwd,
        stdout=follower,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the other end closed
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(60)
    os.close(leader)
    shown = b"".join(chunks).decode().replace("\r\n", "\n")  # the terminal's own newline translation
    assert shown == "".join(f"\r{i}/3\x1b[K" for i in range(4)) + "\nafter the bar\n'done'\n", repr(shown)


def test_run_a_module_function_raw_and_follow_its_logs(cli: Any, emulator: Emulator) -> None:
    raw = cli("run", "--raw", "jobs:train", "--lr", "2")  # module:function, found from the current directory
    assert raw.returncode == 0, raw.stderr
    assert "\x1b[31mred\x1b[0m nul:\x00." in raw.stdout.splitlines()
    started = cli("run", "--detach", "jobs.py::napper", "--seconds", "2")
    run_id = started.stdout.strip()
    followed = cli("logs", "-f", run_id)  # returns when the job ends, with every line once
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.splitlines() == ["MARKER-napping"]
    api = HfApi(endpoint=emulator.endpoint, token=emulator.token)
    (job,) = list(api.list_jobs(namespace=emulator.user, labels={"hfremote-run": run_id}))
    assert job.status.stage == "COMPLETED"
    assert cli("logs", "-f", job.id).stdout.splitlines() == ["MARKER-napping"]
    assert cli("result", run_id).stdout.strip() == "'woke'"


MAP_FAILURE = """
from hfremote import remote


@remote(timeout="5m")
def check(x: int) -> int:
    print(f"checking {x}")
    if x == 2:
        raise ValueError(f"bad input {x}")
    return x


# One job at a time, in input order: 0 and 1 have finished when 2 fails. (With jobs side by side, 2 may
# fail first; then 0 and 1 are cancelled unfinished and print nothing, as documented.)
for value in check.map(range(4), max_parallel=1, progress=False):
    print("got", value)
"""


def run_user_script(cli: Any, name: str, source: str) -> subprocess.CompletedProcess[str]:
    """A user's script in the command's folder and environment, run to its end."""
    script = Path(cli.cwd, name)
    script.write_text(source)
    return subprocess.run(
        [sys.executable, str(script)],
        env=cli.env,
        cwd=cli.cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_failed_map_prints_its_traceback_once(cli: Any) -> None:
    proc = run_user_script(cli, "failing_map.py", MAP_FAILURE)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == ["got 0", "got 1"]
    err = proc.stderr
    assert err.count('raise ValueError(f"bad input {x}")') == 1, err  # the remote traceback, once
    assert err.count("bad input 2") == 2, err  # the remote traceback's last line, then the exception's own
    header = re.search(
        r"^\[input 2\] failed \(ValueError\); job [0-9a-f]+ \(http://\S+\)\n\[input 2\] checking 2\n", err, re.M
    )
    assert header, err  # the job, and its output before the traceback
    assert "entry.py" not in err and "hfremote/_map.py" not in err and "concurrent/futures" not in err, err
    assert err.rstrip().endswith("ValueError: bad input 2"), err


def test_ctrl_c_on_attach_leaves_the_run_running(cli: Any, emulator: Emulator) -> None:
    import signal

    run_id = cli("run", "--detach", "jobs.py::napper", "--seconds", "60").stdout.strip()
    attach = subprocess.Popen(
        [*HFREMOTE, "attach", run_id],
        env=cli.env,
        cwd=cli.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        Lines(attach.stdout).wait_for("^MARKER-napping$")  # type: ignore[arg-type]
        attach.send_signal(signal.SIGINT)
        attach.wait(60)
        err = attach.stderr.read() if attach.stderr else ""
    finally:
        if attach.poll() is None:
            attach.kill()
            attach.wait()
    assert attach.returncode == 130
    assert (
        err.splitlines()[-1] == f"hfremote: detached; run {run_id} keeps running (`hfremote cancel {run_id}` stops it)"
    )
    assert "Traceback" not in err
    assert json.loads(cli("ps", "--json").stdout)[0]["jobs"] == {"RUNNING": 1}
    assert cli("cancel", run_id).returncode == 0


def test_run_overrides_the_decorators_options(cli: Any, emulator: Emulator) -> None:
    started = cli("run", "--flavor", "cpu-upgrade", "jobs.py::napper", "--seconds", "1", "--timeout", "90s", "--detach")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    api = HfApi(endpoint=emulator.endpoint, token=emulator.token)
    (job,) = list(api.list_jobs(namespace=emulator.user, labels={"hfremote-run": run_id}))
    assert job.flavor == "cpu-upgrade"
    assert cli("result", run_id).stdout.strip() == "'woke'"
    assert (emulator.ctx.store.job(job.id) or {}).get("timeout") == 90  # what the platform was asked for
    bad = cli("run", "--flavor", "gpu-of-dreams", "jobs.py::napper", "--seconds", "1")
    assert bad.returncode == 1
    assert bad.stderr.startswith("hfremote run: flavor 'gpu-of-dreams' is not a hardware flavor"), bad.stderr
    assert len(emulator.jobs()) == 1  # refused before any job


THREADS = """
import os
import threading
import time

from hfremote import _console, remote


@remote(timeout="5m")
def speak(word: str) -> str:
    for i in range(3):
        print(f"{word} {i}", flush=True)
    return word


@remote(timeout="5m")
def wait_long() -> None:
    import time

    time.sleep(60)


# One blocking call in a thread, following its job's output; then a second blocking call in this thread.
threading.Thread(target=wait_long, daemon=True).start()
deadline = time.monotonic() + 60
while _console._following[0] < 1:
    assert time.monotonic() < deadline, "the first call never started"
    time.sleep(0.01)
print("RESULT", speak("beta"), flush=True)
os._exit(0)  # (the emulator stops the long job when the test ends)
"""


def test_blocking_calls_from_threads_say_whose_line_it_is(cli: Any) -> None:
    proc = run_user_script(cli, "threads.py", THREADS)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    job = re.search(r"hfremote: speak: job ([0-9a-f]{8})", proc.stderr)
    assert job, proc.stderr
    assert lines == [f"[speak {job[1]}] beta {i}" for i in range(3)] + ["RESULT beta"], proc.stdout
