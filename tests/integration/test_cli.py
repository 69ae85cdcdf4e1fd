"""The real `hf jobs` command line, run as subprocesses against the emulator, and the `hfremote emulator` command."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import poll, processes_with, wait_stage
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from hfremote.emulator import Emulator

# `python -m huggingface_hub.cli.hf` works from any environment that has huggingface_hub installed.
HF = [sys.executable, "-m", "huggingface_hub.cli.hf"]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def hf(emulator: Emulator, tmp_path: Path) -> Any:
    home = tmp_path / "hf-home"
    # Start from the caller's environment minus anything that would point `hf` elsewhere or switch its
    # output mode (HF_* settings, agent markers).
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and k not in ("AI_AGENT", "AGENT")}
    env.update(
        {
            "HF_ENDPOINT": emulator.endpoint,
            "HF_TOKEN": emulator.token,
            "HF_HOME": str(home),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_XET_TELEMETRY_ENABLED": "false",
            "HF_HUB_DISABLE_EXPERIMENTAL_WARNING": "1",
            "NO_COLOR": "1",
        }
    )

    def run(*args: str, timeout: float = 120) -> Result:
        proc = subprocess.run(
            [*HF, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=timeout, check=False
        )
        return Result(proc.returncode, _ANSI.sub("", proc.stdout), _ANSI.sub("", proc.stderr))

    return run


def _job_id(result: Result) -> str:
    match = re.search(r"^\s*id: ([0-9a-f]+)$", result.stdout, re.MULTILINE)
    assert match, result.output
    return match.group(1)


def test_run_prints_logs_and_completes(hf: Any, ns: str, api: HfApi) -> None:
    result = hf("jobs", "run", "python:3.12", "python", "-c", "print('hi')")
    assert result.code == 0, result.output
    assert "hi" in result.stdout.splitlines()
    job_id = _job_id(result)
    assert f"Job {job_id} completed" in result.stdout
    assert api.inspect_job(job_id=job_id, namespace=ns).status.stage == "COMPLETED"


def test_failing_job_makes_run_exit_non_zero(hf: Any) -> None:
    result = hf("jobs", "run", "python:3.12", "python", "-c", "import sys; print('bye'); sys.exit(2)")
    assert result.code != 0, result.output
    assert "bye" in result.stdout
    assert "finished with stage 'ERROR'" in result.stderr
    assert "exit code 2" in result.stderr


def test_detached_job_ps_logs_inspect_cancel(hf: Any, emulator: Emulator) -> None:
    # keeps printing: a no-follow log read stops at the first line newer than the server's Date
    script = (
        "import time\nprint('first-line', flush=True)\nwhile True:\n    time.sleep(0.3)\n    print('tick', flush=True)"
    )
    result = hf("jobs", "run", "-d", "python:3.12", "python", "-c", script)
    assert result.code == 0, result.output
    job_id = _job_id(result)
    assert "first-line" not in result.stdout  # detached: no log streaming
    poll(lambda: "first-line" in emulator.ctx.logs.tail(job_id, 1000), what="the job's first line")

    listing = hf("jobs", "ps", "-a", "--format", "json")
    assert listing.code == 0, listing.output
    rows = {row["id"]: row for row in json.loads(listing.stdout)}
    assert rows[job_id]["status"] == "RUNNING"
    assert rows[job_id]["docker_image"] == "python:3.12"
    table = hf("jobs", "ps", "-a", "--no-truncate")
    assert job_id in table.stdout and "RUNNING" in table.stdout

    logs = hf("jobs", "logs", job_id)
    assert logs.code == 0, logs.output
    lines = logs.stdout.splitlines()
    assert lines[0] == "first-line"
    assert "tick" in lines

    inspected = hf("jobs", "inspect", "--format", "json", job_id)
    assert inspected.code == 0, inspected.output
    [info] = json.loads(inspected.stdout)
    assert info["id"] == job_id
    assert info["status"]["stage"] == "RUNNING"
    assert info["command"] == ["python", "-c", script]

    cancelled = hf("jobs", "cancel", job_id)
    assert cancelled.code == 0, cancelled.output
    assert "Job cancelled" in cancelled.stdout and job_id in cancelled.stdout

    after = hf("jobs", "inspect", "--format", "json", job_id)
    assert after.code == 0, after.output
    assert json.loads(after.stdout)[0]["status"]["stage"] == "CANCELED"
    # no longer listed without -a
    running = hf("jobs", "ps", "--format", "json")
    assert job_id not in {row["id"] for row in json.loads(running.stdout or "[]")}


def test_uv_run_local_script(hf: Any, tmp_path: Path) -> None:
    (tmp_path / "script.py").write_text("import sys\nprint('uv script says', ' '.join(sys.argv[1:]))\n")
    result = hf("jobs", "uv", "run", "script.py", "alpha", "beta")
    assert result.code == 0, result.output
    assert "uv script says alpha beta" in result.stdout.splitlines()
    assert f"Job {_job_id(result)} completed" in result.stdout


def test_hardware_lists_flavors_with_prices(hf: Any) -> None:
    result = hf("jobs", "hardware", "--no-truncate")
    assert result.code == 0, result.output
    [line] = [line for line in result.stdout.splitlines() if line.startswith("a100-large ")]
    assert re.search(r"\$\d+\.\d{4}\s+\$\d+\.\d{2}", line), line  # cost/min and cost/hour
    assert "cpu-basic" in result.stdout


def test_scheduled_lifecycle(hf: Any, api: HfApi, ns: str) -> None:
    created = hf("jobs", "scheduled", "run", "@hourly", "python:3.12", "python", "-c", "print('tick')")
    assert created.code == 0, created.output
    assert "Scheduled Job created" in created.stdout
    sched_id = _job_id(created)

    def listed(*flags: str) -> dict[str, Any]:
        result = hf("jobs", "scheduled", "ps", "--format", "json", *flags)
        assert result.code == 0, result.output
        return {row["id"]: row for row in json.loads(result.stdout or "[]")}

    rows = listed()
    assert rows[sched_id]["schedule"] == "@hourly"
    assert rows[sched_id]["suspend"] is False

    suspended = hf("jobs", "scheduled", "suspend", sched_id)
    assert suspended.code == 0, suspended.output
    assert "Scheduled Job suspended" in suspended.stdout
    assert sched_id not in listed()  # `ps` hides suspended schedules
    assert listed("-a")[sched_id]["suspend"] is True
    assert api.inspect_scheduled_job(scheduled_job_id=sched_id, namespace=ns).suspend is True

    resumed = hf("jobs", "scheduled", "resume", sched_id)
    assert resumed.code == 0, resumed.output
    assert listed()[sched_id]["suspend"] is False

    deleted = hf("jobs", "scheduled", "delete", sched_id)
    assert deleted.code == 0, deleted.output
    assert "Scheduled Job deleted" in deleted.stdout
    assert sched_id not in listed("-a")
    again = hf("jobs", "scheduled", "delete", sched_id)
    assert again.code != 0
    assert "404" in again.stderr


def test_scheduled_run_fires_when_due(hf: Any, emulator: Emulator, api: HfApi, ns: str) -> None:
    created = hf("jobs", "scheduled", "run", "@hourly", "python:3.12", "python", "-c", "print('tick')")
    assert created.code == 0, created.output
    sched_id = _job_id(created)
    emulator.advance(3600)  # the next @hourly run is now due: the emulator's scheduler fires it

    def last_job() -> Any:
        status = api.inspect_scheduled_job(scheduled_job_id=sched_id, namespace=ns).status
        return status.last_job

    job_id = poll(last_job, what="the scheduled run").id
    assert wait_stage(api, job_id, ns).status.stage == "COMPLETED"
    assert list(api.fetch_job_logs(job_id=job_id, namespace=ns)) == ["tick"]
    rows = {row["id"]: row for row in json.loads(hf("jobs", "scheduled", "ps", "--format", "json").stdout)}
    assert rows[sched_id]["last_run"] != "N/A"


# -- the `hfremote emulator` command --------------------------------------------------------------------
def _hfremote(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hfremote.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_emulator_command_serves_and_stops_cleanly(tmp_path: Path, signum: signal.Signals) -> None:
    state = tmp_path / "state"
    marker = f"hfremote-test-marker-{tmp_path.name}"
    proc = _hfremote(
        "emulator",
        "--port",
        "0",
        "--state-dir",
        str(state),
        "--token",
        "t0k",
        "--fault",
        "503 GET /api/jobs/hardware count=1",
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"serving on (http://\S+)", first)
        assert match, first + (proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        endpoint = match.group(1)
        # read through the file object: communicate() reads the pipe itself and misses what is buffered here
        assert f"export HF_ENDPOINT={endpoint}" in proc.stdout.readline()
        api = HfApi(endpoint=endpoint, token="t0k")
        assert api.whoami()["name"] == "emulator-user"
        with pytest.raises(HfHubHTTPError) as info:
            HfApi(endpoint=endpoint, token="wrong").whoami()
        assert info.value.response.status_code == 401
        # the --fault option is live
        with pytest.raises(HfHubHTTPError) as info:
            api.list_jobs_hardware()
        assert info.value.response.status_code == 503
        assert any(h.name == "a100-large" for h in api.list_jobs_hardware())
        # a job still running when the emulator stops is ended with it, not left behind
        job = api.run_job(
            image="python:3.12",
            command=["python", "-c", f"print('up', flush=True); import time; time.sleep(60)  # {marker}"],
            namespace="emulator-user",
        )
        poll(lambda: "up" in api.fetch_job_logs(job_id=job.id, namespace="emulator-user"), what="the job to start")
        assert processes_with(marker)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out == ""
    assert "Traceback" not in err, err
    assert processes_with(marker) == []
    # the state survives: a new emulator on the same directory knows the job, ended by the stop
    with Emulator(state, token="t0k") as again:
        job_info = HfApi(endpoint=again.endpoint, token="t0k").inspect_job(job_id=job.id, namespace="emulator-user")
    assert job_info.status.stage == "ERROR"
    assert "emulator stopped" in (job_info.status.message or "")


@pytest.mark.parametrize(
    ("spec", "message"),
    [("bogus GET /api/jobs/*", "unknown fault kind 'bogus'"), ("503 GET * colour=red", "unknown fault option")],
)
def test_emulator_command_rejects_bad_fault(tmp_path: Path, spec: str, message: str) -> None:
    proc = _hfremote("emulator", "--port", "0", "--state-dir", str(tmp_path / "state"), "--fault", spec, cwd=tmp_path)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "invalid --fault" in err and message in err, err
    assert "serving" not in out


def test_emulator_command_serves_several_users(tmp_path: Path) -> None:
    args = ["--user", "alice:hf_a1", "--user", "bob:hf_b2", "--org", "team:alice,bob"]
    proc = _hfremote("emulator", "--port", "0", "--state-dir", str(tmp_path / "state"), *args, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        match = re.search(r"serving on (http://\S+)", proc.stdout.readline())
        assert match, proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
        for token, name in (("hf_a1", "alice"), ("hf_b2", "bob")):
            who = HfApi(endpoint=match.group(1), token=token).whoami()
            assert who["name"] == name and [org["name"] for org in who["orgs"]] == ["team"]
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "alice", "--user", "bob"], "needs its token"),
        (["--user", "a:t", "--user", "b:t"], "share a token"),
        (["--user", "a:t", "--org", "team:zed"], "unknown users"),
        (["--user", "bad name:t"], "invalid user"),
    ],
)
def test_emulator_command_rejects_bad_users(tmp_path: Path, args: list[str], message: str) -> None:
    proc = _hfremote("emulator", "--port", "0", "--state-dir", str(tmp_path / "state"), *args, cwd=tmp_path)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and message in err, err
    assert "serving" not in out
