"""The real huggingface_hub client against a real emulator: jobs run as real local processes.

Every wait is a poll with a deadline (helpers.poll / wait_stage); nothing asserts on elapsed time.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import textwrap
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import poll, processes_with, wait_stage
from huggingface_hub import HfApi, JobHardware, JobInfo, Volume

from hfremote.emulator import Emulator

IMAGE = "python:3.12"
SLEEPER = ["python", "-c", "import time; time.sleep(60)"]
TOKEN = "hf_test_token_1234567890"


def logs(api: HfApi, job_id: str, ns: str, **kwargs: Any) -> list[str]:
    return list(api.fetch_job_logs(job_id=job_id, namespace=ns, **kwargs))


def raw_get(emulator: Emulator, path: str) -> httpx.Response:
    """The wire JSON, not the client's parsed view (to prove what the server does not send)."""
    response = httpx.get(f"{emulator.endpoint}{path}", headers={"authorization": f"Bearer {emulator.token}"})
    response.raise_for_status()
    return response


def wait_running(api: HfApi, job_id: str, ns: str) -> JobInfo:
    return wait_stage(api, job_id, ns, stages=("RUNNING",), timeout=30)


def first_live_line(api: HfApi, job_id: str, ns: str) -> str:
    """The first log line, read live (a no-follow read of a silent running job waits out its 5 s timeout)."""
    for line in api.fetch_job_logs(job_id=job_id, namespace=ns, follow=True):
        return line  # leaving the loop drops (and so closes) the stream
    raise AssertionError(f"the log of job {job_id} ended without a line")


# -- 1. run_job: logs and JobInfo ------------------------------------------------------------------
def test_run_job_info_logs_and_secrets(api: HfApi, ns: str, emulator: Emulator) -> None:
    secret = "s3cr3t-value-7f1c2a"
    code = textwrap.dedent(
        """
        import hashlib, os, sys
        print("to stdout", flush=True)
        print("to stderr", file=sys.stderr, flush=True)
        digest = hashlib.sha256(os.environ["S"].encode()).hexdigest()
        print("secret matches:", digest == os.environ["S_SHA256"])
        print("greeting:", os.environ["GREETING"])
        """
    )
    job = api.run_job(
        image=IMAGE,
        command=["python", "-c", code],
        env={"GREETING": "hello", "S_SHA256": hashlib.sha256(secret.encode()).hexdigest()},
        secrets={"S": secret},
        flavor="cpu-upgrade",
        labels={"team": "a", "kind": "test"},
        namespace=ns,
    )
    assert re.fullmatch(r"[0-9a-f]{24}", job.id)
    assert job.status.stage in ("SCHEDULING", "RUNNING")

    done = wait_stage(api, job.id, ns)
    assert done.status.stage == "COMPLETED", done.status
    assert done.status.message is None
    assert done.owner.name == ns and done.owner.type == "user"
    assert re.fullmatch(r"[0-9a-f]{24}", done.owner.id)
    assert done.url == f"{emulator.endpoint}/jobs/{ns}/{job.id}"
    assert done.docker_image == IMAGE
    assert done.command == ["python", "-c", code]
    assert done.flavor == "cpu-upgrade"
    assert done.retry == 0  # attempts - 1
    assert done.labels is not None and done.labels["team"] == "a" and done.labels["kind"] == "test"
    assert done.environment is not None and done.environment["GREETING"] == "hello"
    assert done.secrets is not None and set(done.secrets) == {"S"} and done.secrets["S"] != secret
    for moment in (done.created_at, done.started_at, done.finished_at):
        assert isinstance(moment, datetime) and moment.tzinfo == timezone.utc
    assert done.created_at is not None and done.started_at is not None and done.finished_at is not None
    assert done.created_at <= done.started_at <= done.finished_at
    assert done.durations is not None

    lines = logs(api, job.id, ns)
    # stdout and stderr are two pipes: each keeps its order, their interleaving is free
    assert [line for line in lines if line != "to stderr"] == ["to stdout", "secret matches: True", "greeting: hello"]
    assert lines.count("to stderr") == 1

    # The secret reaches the job but is never sent back: not in the logs, not in any JSON.
    wire = [
        raw_get(emulator, f"/api/jobs/{ns}/{job.id}").text,
        raw_get(emulator, f"/api/jobs/{ns}").text,
        raw_get(emulator, f"/api/jobs/{ns}/{job.id}/logs").text,
    ]
    for text in wire:
        assert secret not in text
    inspected = raw_get(emulator, f"/api/jobs/{ns}/{job.id}").json()
    assert inspected["secrets"] == {"S": done.secrets["S"]}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", inspected["createdAt"])
    assert inspected["finishedAt"].endswith("Z") and inspected["startedAt"].endswith("Z")


# -- 2. run_uv_job with a local script writing to /data ----------------------------------------------
def test_run_uv_job_local_script_writes_to_bucket(api: HfApi, ns: str, tmp_path: Path) -> None:
    script = tmp_path / "write_out.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from pathlib import Path
            out = Path(sys.argv[1])
            out.write_text("written by the job\\n")
            print("wrote", out.name)
            """
        )
    )
    job = api.run_uv_job(str(script), script_args=["/data/out.txt"], namespace=ns)
    assert job.volumes is not None and len(job.volumes) == 1
    volume = job.volumes[0]
    assert volume.type == "bucket" and volume.source == f"{ns}/jobs-artifacts" and volume.mount_path == "/data"
    assert volume.path
    assert job.command is not None and job.command[-2:] == ["/data/write_out.py", "/data/out.txt"]

    done = wait_stage(api, job.id, ns, timeout=60)
    assert done.status.stage == "COMPLETED", (done.status, logs(api, job.id, ns))
    assert "wrote out.txt" in logs(api, job.id, ns)

    subfolder = volume.path.strip("/")
    listing = {f.path for f in api.list_bucket_tree(f"{ns}/jobs-artifacts", recursive=True)}
    assert {f"{subfolder}/write_out.py", f"{subfolder}/out.txt"} <= listing

    dest = tmp_path / "downloaded" / "out.txt"
    api.download_bucket_files(
        f"{ns}/jobs-artifacts", [(f"{subfolder}/out.txt", str(dest))], raise_on_missing_files=True
    )
    assert dest.read_text() == "written by the job\n"


def test_files_a_job_wrote_are_served_whole_and_through_xet(
    api: HfApi, ns: str, emulator: Emulator, tmp_path: Path
) -> None:
    bucket = f"{ns}/written"
    api.create_bucket(bucket, exist_ok=True)
    # 300 kB that do not compress: several Xet chunks once the emulator turns the file into xorbs.
    code = "import random, sys; open(sys.argv[1], 'wb').write(random.Random(7).randbytes(300_000))"
    volume = Volume(type="bucket", source=bucket, mount_path="/data")
    job = api.run_job(image=IMAGE, command=["python", "-c", code, "/data/out.bin"], volumes=[volume], namespace=ns)
    assert wait_stage(api, job.id, ns, timeout=60).status.stage == "COMPLETED"
    expected = random.Random(7).randbytes(300_000)
    since = len(emulator.requests())
    assert raw_get(emulator, f"/buckets/{bucket}/resolve/out.bin").content == expected
    # The emulator's own uploads (the file into xorbs, for the first Xet reader) are neither faulted
    # nor logged as a client's requests.
    rule = emulator.faults.add("503 POST /cas/*")
    for name in ("first", "second"):
        dest = tmp_path / name
        api.download_bucket_files(bucket, [("out.bin", str(dest))], raise_on_missing_files=True)
        assert dest.read_bytes() == expected
    assert rule.fired == 0
    assert not [p for _, m, p, _ in emulator.requests()[since:] if m == "POST" and p.startswith("/cas/")]
    (info,) = api.get_bucket_paths_info(bucket, ["out.bin"])
    assert info.size == len(expected)


# -- 3. logs: replay, follow, tail ------------------------------------------------------------------
def test_fetch_job_logs_replay_follow_and_tail(api: HfApi, ns: str) -> None:
    code = "import time\nfor i in range(12):\n    print(f'line {i}')\n    time.sleep(0.12)\nprint('last line')"
    expected = [f"line {i}" for i in range(12)] + ["last line"]
    job = api.run_job(image=IMAGE, command=["python", "-u", "-c", code], namespace=ns)

    followed = logs(api, job.id, ns, follow=True)  # starts while the job is scheduling or running
    assert followed == expected
    assert api.inspect_job(job_id=job.id, namespace=ns).status.stage == "COMPLETED"

    assert logs(api, job.id, ns) == expected
    assert logs(api, job.id, ns, tail=3) == expected[-3:]
    assert logs(api, job.id, ns, tail=1) == ["last line"]
    assert logs(api, job.id, ns, follow=True) == expected  # following a finished job replays and ends


# -- 4. metrics -------------------------------------------------------------------------------------
def test_fetch_job_metrics_running_then_finished(api: HfApi, ns: str) -> None:
    job = api.run_job(image=IMAGE, command=["python", "-u", "-c", "print('burning')\nwhile True: pass"], namespace=ns)
    wait_running(api, job.id, ns)

    samples: list[dict[str, Any]] = []
    for sample in api.fetch_job_metrics(job_id=job.id, namespace=ns, follow=True):
        samples.append(sample)
        if sample["cpu_usage_pct"] > 0 or len(samples) >= 5:
            break
    assert samples
    keys = {"cpu_usage_pct", "cpu_millicores", "memory_used_bytes", "memory_total_bytes", "rx_bps", "tx_bps", "gpus"}
    for sample in samples:
        assert keys <= set(sample), sample
        assert sample["memory_total_bytes"] > 0 and sample["memory_used_bytes"] > 0
    assert any(s["cpu_usage_pct"] > 0 and s["cpu_millicores"] > 0 for s in samples), samples

    one = list(api.fetch_job_metrics(job_id=job.id, namespace=ns))  # no-follow: the current sample only
    assert len(one) == 1 and keys <= set(one[0])

    api.cancel_job(job_id=job.id, namespace=ns)
    assert wait_stage(api, job.id, ns).status.stage == "CANCELED"
    assert list(api.fetch_job_metrics(job_id=job.id, namespace=ns)) == []  # 406, tolerated by the client
    assert list(api.fetch_job_metrics(job_id=job.id, namespace=ns, follow=True)) == []


# -- 5. inspect, list filters and pagination --------------------------------------------------------
def test_list_jobs_filters_and_pagination(tmp_path: Path) -> None:
    with Emulator(tmp_path / "paged", token=TOKEN, page_size=2) as emu:
        api, ns = HfApi(endpoint=emu.endpoint, token=emu.token), emu.user
        quick = [
            api.run_job(image=IMAGE, command=["python", "-c", "pass"], labels={"team": team}, namespace=ns)
            for team in ("a", "a", "b", "b")
        ]
        sleeper = api.run_job(image=IMAGE, command=SLEEPER, labels={"team": "a"}, namespace=ns)
        for job in quick:
            assert wait_stage(api, job.id, ns).status.stage == "COMPLETED"
        wait_running(api, sleeper.id, ns)

        inspected = api.inspect_job(job_id=quick[0].id, namespace=ns)
        assert inspected.id == quick[0].id and inspected.labels is not None and inspected.labels["team"] == "a"

        def list_requests() -> int:
            return sum(1 for _, method, path, _ in emu.requests() if method == "GET" and path == f"/api/jobs/{ns}")

        before = list_requests()
        everything = list(api.list_jobs(namespace=ns))
        # 2 + 2 + 1: the client followed the Link header twice. (A request is logged just after its response
        # is sent, so the last page may be logged a moment after the client has read it.)
        poll(lambda: list_requests() - before >= 3, timeout=5, what="the last page request to be logged")
        assert list_requests() - before == 3
        assert sorted(j.id for j in everything) == sorted(j.id for j in [*quick, sleeper])
        assert len({j.id for j in everything}) == 5

        team_a = {j.id for j in api.list_jobs(labels={"team": "a"}, namespace=ns)}
        assert team_a == {quick[0].id, quick[1].id, sleeper.id}  # the filter survives pagination
        assert {j.id for j in api.list_jobs(labels={"team": "b"}, namespace=ns)} == {quick[2].id, quick[3].id}
        assert list(api.list_jobs(labels={"team": "nobody"}, namespace=ns)) == []
        assert [j.id for j in api.list_jobs(status="RUNNING", namespace=ns)] == [sleeper.id]
        assert {j.id for j in api.list_jobs(status="COMPLETED", namespace=ns)} == {j.id for j in quick}
        assert {j.id for j in api.list_jobs(status="COMPLETED", labels={"team": "a"}, namespace=ns)} == {
            quick[0].id,
            quick[1].id,
        }
        both = {j.id for j in api.list_jobs(status=["RUNNING", "COMPLETED"], namespace=ns)}
        assert len(both) == 5

        api.cancel_job(job_id=sleeper.id, namespace=ns)
        assert wait_stage(api, sleeper.id, ns).status.stage == "CANCELED"


# -- 6. cancel kills the whole process group ------------------------------------------------------
def test_cancel_kills_job_and_its_children(api: HfApi, ns: str) -> None:
    marker = f"cancel-child-{uuid.uuid4().hex}"  # found by the host, whatever pids the job sees
    code = textwrap.dedent(
        f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # {marker}"])
        print("child started", flush=True)
        time.sleep(60)
        """
    )
    job = api.run_job(image=IMAGE, command=["python", "-c", code], namespace=ns)

    first = first_live_line(api, job.id, ns)  # the job starts its child, then sleeps
    assert first == "child started", first
    assert processes_with(marker)

    api.cancel_job(job_id=job.id, namespace=ns)
    done = wait_stage(api, job.id, ns, timeout=15)
    assert done.status.stage == "CANCELED"
    assert done.finished_at is not None
    poll(lambda: not processes_with(marker), timeout=10, what="the job's child process to die")


def test_background_children_end_with_the_job(api: HfApi, ns: str) -> None:
    # The main process exits at once and leaves a child behind: a container would stop with it.
    marker = f"leftover-child-{uuid.uuid4().hex}"
    code = textwrap.dedent(
        f"""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # {marker}"])
        print("child started", flush=True)
        """
    )
    job = api.run_job(image=IMAGE, command=["python", "-c", code], namespace=ns)
    assert wait_stage(api, job.id, ns).status.stage == "COMPLETED"
    assert logs(api, job.id, ns) == ["child started"]
    poll(lambda: not processes_with(marker), timeout=10, what="the job's leftover child process to die")


def test_cancel_sleeping_job(api: HfApi, ns: str) -> None:
    job = api.run_job(image=IMAGE, command=SLEEPER, namespace=ns)
    wait_running(api, job.id, ns)
    api.cancel_job(job_id=job.id, namespace=ns)
    done = wait_stage(api, job.id, ns, timeout=15)
    assert done.status.stage == "CANCELED"
    api.cancel_job(job_id=job.id, namespace=ns)  # cancelling again is harmless
    assert api.inspect_job(job_id=job.id, namespace=ns).status.stage == "CANCELED"


# -- 7. timeout -------------------------------------------------------------------------------------
def test_timeout_ends_job_with_error(api: HfApi, ns: str) -> None:
    job = api.run_job(image=IMAGE, command=SLEEPER, timeout=2, namespace=ns)
    done = wait_stage(api, job.id, ns, timeout=30)
    assert done.status.stage == "ERROR"
    assert done.status.message is not None and "timed out" in done.status.message.lower()
    assert "2" in done.status.message


# -- 8. attempts ------------------------------------------------------------------------------------
def test_attempts_retry_a_failing_command(api: HfApi, ns: str) -> None:
    code = "import sys; print('try'); sys.exit(3)"
    job = api.run_job(image=IMAGE, command=["python", "-c", code], attempts=2, namespace=ns)
    assert job.retry == 1
    done = wait_stage(api, job.id, ns)
    assert done.status.stage == "ERROR"
    assert done.status.message is not None and "exit code 3" in done.status.message
    assert logs(api, job.id, ns).count("try") == 2


def test_attempts_second_try_succeeds(api: HfApi, ns: str) -> None:
    # Each attempt is a fresh container: what one leaves for the next goes through a volume.
    api.create_bucket(f"{ns}/attempts")
    code = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        marker = Path("/state/first-attempt-done")
        if not marker.exists():
            marker.write_text("x")
            Path("/tmp/scratch").write_text("x")
            print("first attempt fails")
            sys.exit(1)
        print("second attempt succeeds", Path("/tmp/scratch").exists())
        """
    )
    job = api.run_job(
        image=IMAGE,
        command=["python", "-c", code],
        volumes=[Volume(type="bucket", source=f"{ns}/attempts", mount_path="/state")],
        attempts=2,
        namespace=ns,
    )
    done = wait_stage(api, job.id, ns)
    assert done.status.stage == "COMPLETED", done.status
    assert done.retry == 1
    lines = logs(api, job.id, ns)
    assert lines[0] == "first attempt fails" and lines[-1].startswith("second attempt succeeds")


# -- 9. max_running ---------------------------------------------------------------------------------
def test_max_running_queues_jobs(tmp_path: Path) -> None:
    with Emulator(tmp_path / "one-slot", token=TOKEN, max_running=1) as emu:
        api, ns = HfApi(endpoint=emu.endpoint, token=emu.token), emu.user
        first = api.run_job(image=IMAGE, command=SLEEPER, namespace=ns)
        wait_running(api, first.id, ns)
        second = api.run_job(image=IMAGE, command=SLEEPER, namespace=ns)
        # The dispatcher has been woken by the creation; the slot is still taken.
        for _ in range(5):
            assert api.inspect_job(job_id=second.id, namespace=ns).status.stage == "SCHEDULING"
        assert api.inspect_job(job_id=first.id, namespace=ns).status.stage == "RUNNING"
        assert [j.id for j in api.list_jobs(status="SCHEDULING", namespace=ns)] == [second.id]

        api.cancel_job(job_id=first.id, namespace=ns)
        assert wait_stage(api, first.id, ns).status.stage == "CANCELED"
        running = wait_running(api, second.id, ns)
        assert running.started_at is not None
        api.cancel_job(job_id=second.id, namespace=ns)
        assert wait_stage(api, second.id, ns).status.stage == "CANCELED"


def test_emulators_share_job_folders_one_job_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Job folders ("slots") live in the user's cache, so a new emulator reuses them; a file lock keeps two
    # emulators' jobs out of each other's. Host processes (sandbox off) see their folder and the test's files.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    slots = tmp_path / "cache" / "hfremote" / "emulator-slots"
    go = tmp_path / "go"
    # The job writes its working folder (<slot>/work) to a file, then waits for `go`.
    code = (
        "import os, sys, time\n"
        "open(sys.argv[1], 'w').write(os.getcwd())\n"
        "while not os.path.exists(sys.argv[2]): time.sleep(0.02)"
    )

    def start(emu: Emulator, name: str) -> tuple[HfApi, str, Path]:
        api, out = HfApi(endpoint=emu.endpoint, token=emu.token), tmp_path / f"{name}.cwd"
        job = api.run_job(image=IMAGE, command=["python", "-c", code, str(out), str(go)], namespace=emu.user)
        poll(lambda: out.exists() and out.read_text(), 30, what=f"job {name} to start")
        return api, job.id, Path(out.read_text()).parent

    with (
        Emulator(tmp_path / "a", token=TOKEN, max_running=1, sandbox="off") as a,
        Emulator(tmp_path / "b", token=TOKEN, max_running=1, sandbox="off") as b,
    ):
        (api_a, job_a, slot_a), (api_b, job_b, slot_b) = start(a, "a"), start(b, "b")
        assert (slot_a, slot_b) == (slots / "0", slots / "1")  # one slot each, both running
        go.touch()
        assert wait_stage(api_a, job_a, a.user).status.stage == "COMPLETED"
        assert wait_stage(api_b, job_b, b.user).status.stage == "COMPLETED"
    with Emulator(tmp_path / "c", token=TOKEN, sandbox="off") as c:
        api_c, job_c, slot_c = start(c, "c")
        assert slot_c == slots / "0"  # a new emulator, the same folder
        assert wait_stage(api_c, job_c, c.user).status.stage == "COMPLETED"


def test_job_folders_stay_in_the_state_directory_without_a_writable_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(not_a_folder))
    with Emulator(tmp_path / "state", token=TOKEN, sandbox="off") as emu:  # a host process shows its folder
        api = HfApi(endpoint=emu.endpoint, token=emu.token)
        job = api.run_job(image=IMAGE, command=["python", "-c", "import os; print(os.getcwd())"], namespace=emu.user)
        assert wait_stage(api, job.id, emu.user).status.stage == "COMPLETED"
        assert logs(api, job.id, emu.user) == [str(tmp_path / "state" / "slots" / "0" / "work")]


# -- 10. hardware, rerun, labels, unknown command --------------------------------------------------
def test_list_jobs_hardware_has_every_flavor(api: HfApi) -> None:
    hardware = {h.name: h for h in api.list_jobs_hardware()}
    assert {f.value for f in JobHardware} <= set(hardware)
    for flavor in JobHardware:
        info = hardware[flavor.value]
        assert info.unit_cost_usd > 0 and info.unit_cost_micro_usd > 0 and info.unit_label
        assert info.pretty_name and info.cpu and info.ram
    assert hardware["cpu-basic"].accelerator is None
    assert hardware["a100-large"].accelerator is not None


def test_rerun_job_duplicates_the_command(api: HfApi, ns: str) -> None:
    command = ["python", "-c", "import os; print('env', os.environ['X'], os.environ['S'] == os.environ['X'])"]
    job = api.run_job(
        image=IMAGE, command=command, env={"X": "1"}, secrets={"S": "1"}, flavor="cpu-upgrade", namespace=ns
    )
    assert wait_stage(api, job.id, ns).status.stage == "COMPLETED"
    again = api.rerun_job(job_id=job.id, namespace=ns)
    assert again.id != job.id
    assert again.command == command and again.environment == job.environment and again.flavor == "cpu-upgrade"
    assert wait_stage(api, again.id, ns).status.stage == "COMPLETED"
    assert logs(api, again.id, ns) == ["env 1 True"]  # the duplicate keeps the secrets too


def test_update_job_labels(api: HfApi, ns: str) -> None:
    assert hasattr(api, "update_job_labels")
    job = api.run_job(image=IMAGE, command=["python", "-c", "pass"], labels={"team": "a"}, namespace=ns)
    updated = api.update_job_labels(job_id=job.id, labels={"team": "b", "stage": "two"}, namespace=ns)
    assert updated.labels == {"team": "b", "stage": "two"}
    assert api.inspect_job(job_id=job.id, namespace=ns).labels == {"team": "b", "stage": "two"}
    assert [j.id for j in api.list_jobs(labels={"team": "b"}, namespace=ns)] == [job.id]
    assert list(api.list_jobs(labels={"team": "a"}, namespace=ns)) == []
    wait_stage(api, job.id, ns)


def test_unknown_command_is_an_error(api: HfApi, ns: str) -> None:
    job = api.run_job(image=IMAGE, command=["no-such-program-xyz", "--flag"], namespace=ns)
    done = wait_stage(api, job.id, ns)
    assert done.status.stage == "ERROR"
    assert done.status.message is not None and "no-such-program-xyz" in done.status.message


# -- 11. restart persistence -------------------------------------------------------------------------
def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "persistent"
    with Emulator(state, token=TOKEN) as emu:
        api, ns = HfApi(endpoint=emu.endpoint, token=emu.token), emu.user
        job = api.run_job(image=IMAGE, command=["python", "-c", "print('before restart')"], namespace=ns)
        assert wait_stage(api, job.id, ns).status.stage == "COMPLETED"
        running = api.run_job(image=IMAGE, command=SLEEPER, namespace=ns)
        wait_running(api, running.id, ns)
        sched = api.create_scheduled_job(
            image=IMAGE, command=["python", "-c", "print('nightly')"], schedule="@daily", namespace=ns
        )
        api.create_bucket(f"{ns}/keep")
        api.batch_bucket_files(f"{ns}/keep", add=[(b"kept across restarts\n", "dir/kept.txt")])

    with Emulator(state, token=TOKEN) as emu:
        api = HfApi(endpoint=emu.endpoint, token=emu.token)
        again = api.inspect_job(job_id=job.id, namespace=ns)
        assert again.status.stage == "COMPLETED" and again.command == job.command
        assert logs(api, job.id, ns) == ["before restart"]
        interrupted = api.inspect_job(job_id=running.id, namespace=ns)
        assert interrupted.status.stage == "ERROR" and interrupted.status.message

        assert [s.id for s in api.list_scheduled_jobs(namespace=ns)] == [sched.id]
        found = api.inspect_scheduled_job(scheduled_job_id=sched.id, namespace=ns)
        assert found.schedule == "@daily" and found.job_spec.command == ["python", "-c", "print('nightly')"]

        dest = tmp_path / "kept.txt"
        api.download_bucket_files(f"{ns}/keep", [("dir/kept.txt", str(dest))], raise_on_missing_files=True)
        assert dest.read_text() == "kept across restarts\n"
        assert json.loads(raw_get(emu, f"/api/jobs/{ns}/{job.id}").text)["id"] == job.id
