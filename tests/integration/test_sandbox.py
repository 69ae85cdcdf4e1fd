"""Emulator jobs behave like jobs in a container: real mount paths, the platform's environment, no reach
into the host, no process left behind, a GPU pool, and state kept private at rest.

Tests that need the sandbox skip where the emulator runs jobs as host processes (sandbox off, or no
bubblewrap); the rest hold in both modes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers import poll, processes_with, wait_stage
from huggingface_hub import HfApi, Volume

from hfremote import remote
from hfremote.emulator import Emulator

IMAGE = "python:3.12"
TOKEN = "hf_sandbox_test_token"


def _logs(api: HfApi, job_id: str, ns: str) -> list[str]:
    return list(api.fetch_job_logs(job_id=job_id, namespace=ns))


def _run(api: HfApi, ns: str, code: str, **kwargs: Any) -> tuple[str, list[str]]:
    job = api.run_job(image=IMAGE, command=["python", "-c", textwrap.dedent(code)], namespace=ns, **kwargs)
    done = wait_stage(api, job.id, ns, timeout=120)
    lines = _logs(api, job.id, ns)
    assert done.status.stage == "COMPLETED", (done.status, lines)
    return job.id, lines


@pytest.fixture
def sandboxed(emulator: Emulator) -> Emulator:
    if not emulator.sandboxed:
        pytest.skip("jobs run as host processes here (sandbox off or unavailable)")
    return emulator


# -- real mount paths --------------------------------------------------------------------------------
def test_uv_script_writes_data_out_txt(sandboxed: Emulator, api: HfApi, ns: str, tmp_path: Path) -> None:
    # The `hf jobs uv run` pattern: the script writes into /data in its own code, not through an argument.
    script = tmp_path / "make_out.py"
    script.write_text(
        "# /// script\n# dependencies = []\n# ///\n"
        "from pathlib import Path\n"
        "Path('/data/out.txt').write_text('written in the job')\n"
        "print('wrote', sorted(p.name for p in Path('/data').iterdir()))\n"
    )
    job = api.run_uv_job(str(script), namespace=ns)
    done = wait_stage(api, job.id, ns, timeout=120)
    assert done.status.stage == "COMPLETED", (done.status, _logs(api, job.id, ns))
    assert _logs(api, job.id, ns) == ["wrote ['make_out.py', 'out.txt']"]
    bucket = f"{ns}/jobs-artifacts"
    (out,) = [f.path for f in api.list_bucket_tree(bucket, recursive=True) if f.path.endswith("/out.txt")]
    api.download_bucket_files(bucket, [(out, tmp_path / "out.txt")])
    assert (tmp_path / "out.txt").read_text() == "written in the job"


def test_volume_sub_folder_read_only_and_read_write(sandboxed: Emulator, api: HfApi, ns: str, tmp_path: Path) -> None:
    api.create_bucket(f"{ns}/data")
    api.batch_bucket_files(
        f"{ns}/data",
        add=[(b"a,b\n1,2\n", "train/train.csv"), (b"other", "elsewhere/x.txt"), (b"old", "out/stale.txt")],
    )
    code = """
        import os
        from pathlib import Path
        print(sorted(os.listdir('/mnt/train')), Path('/mnt/train/train.csv').read_text().splitlines()[1])
        for action in (lambda: Path('/mnt/train/new.txt').write_text('x'),
                       lambda: Path('/mnt/train/train.csv').write_text('x'),
                       lambda: os.chmod('/mnt/train/train.csv', 0o666)):
            try:
                action()
                print('changed the read-only volume')
            except OSError as e:
                print('refused', e.errno)
        Path('/mnt/out/result.txt').write_text('done')
        os.remove('/mnt/out/stale.txt')
        """
    _, lines = _run(
        api,
        ns,
        code,
        volumes=[
            Volume(type="bucket", source=f"{ns}/data", path="train", mount_path="/mnt/train", read_only=True),
            Volume(type="bucket", source=f"{ns}/data", path="out", mount_path="/mnt/out"),
        ],
    )
    assert lines == ["['train.csv'] 1,2", "refused 30", "refused 30", "refused 30"]  # 30: EROFS
    paths = {f.path for f in api.list_bucket_tree(f"{ns}/data", recursive=True) if f.type == "file"}
    assert paths == {"train/train.csv", "elsewhere/x.txt", "out/result.txt"}
    api.download_bucket_files(f"{ns}/data", [("train/train.csv", tmp_path / "t.csv")])
    assert (tmp_path / "t.csv").read_bytes() == b"a,b\n1,2\n"


def test_a_read_write_volume_inside_a_read_only_one(sandboxed: Emulator, api: HfApi, ns: str) -> None:
    # The engine's layout: the run's shared files read-only, the job's own chunk folder read-write inside.
    api.create_bucket(f"{ns}/run")
    api.batch_bucket_files(f"{ns}/run", add=[(b"code", "r1/shared/entry.py"), (b"in", "r1/chunks/7/input.pkl")])
    code = """
        from pathlib import Path
        print(sorted(p.name for p in Path('/data').iterdir()), Path('/data/chunk/input.pkl').read_text())
        Path('/data/chunk/result.pkl').write_text('out')
        """
    _, lines = _run(
        api,
        ns,
        code,
        volumes=[
            Volume(type="bucket", source=f"{ns}/run", path="r1/shared", mount_path="/data", read_only=True),
            Volume(type="bucket", source=f"{ns}/run", path="r1/chunks/7", mount_path="/data/chunk"),
        ],
    )
    assert lines == ["['chunk', 'entry.py'] in"]
    paths = sorted(f.path for f in api.list_bucket_tree(f"{ns}/run", recursive=True) if f.type == "file")
    assert paths == ["r1/chunks/7/input.pkl", "r1/chunks/7/result.pkl", "r1/shared/entry.py"]


def test_read_write_volume_syncs_back_only_what_the_job_changed(sandboxed: Emulator, api: HfApi, ns: str) -> None:
    bucket = f"{ns}/work"
    api.create_bucket(bucket)
    keep = [(f"keep-{i}".encode(), f"w/keep/{i}.txt") for i in range(50)]
    api.batch_bucket_files(
        bucket,
        add=[
            *keep,
            (b"v1", "w/edit.txt"),
            (b"gone", "w/drop.txt"),
            (b"a", "w/dir/a.txt"),
            (b"b", "w/dir/b.txt"),
            (b"s", "w/sub/deep/s.txt"),
        ],
    )
    before = {f["path"]: f["uploadedAt"] for f in sandboxed.ctx.store.files(bucket)}
    code = """
        import os, shutil
        from pathlib import Path
        Path('/w/edit.txt').write_text('v2')
        os.remove('/w/drop.txt')
        shutil.rmtree('/w/dir')
        os.mkdir('/w/dir')
        Path('/w/dir/c.txt').write_text('c')
        os.rename('/w/keep/0.txt', '/w/moved.txt')
        shutil.move('/w/sub', '/w/renamed')  # a lower folder moved (a redirect, or a copy where not allowed)
        open('/w/keep/1.txt', 'a').close()  # opened for writing, not changed
        Path('/w/new/deep').mkdir(parents=True)
        Path('/w/new/deep/n.txt').write_text('n')
        print(sorted(os.listdir('/w')))
        """
    _, lines = _run(api, ns, code, volumes=[Volume(type="bucket", source=bucket, path="w", mount_path="/w")])
    assert lines == ["['dir', 'edit.txt', 'keep', 'moved.txt', 'new', 'renamed']"]
    after = {f["path"]: f["uploadedAt"] for f in sandboxed.ctx.store.files(bucket)}
    expected = {f"w/keep/{i}.txt" for i in range(1, 50)} | {"w/edit.txt", "w/dir/c.txt", "w/moved.txt"}
    assert set(after) == expected | {"w/new/deep/n.txt", "w/renamed/deep/s.txt"}
    untouched = {p for p in expected if p.startswith("w/keep/")}
    assert all(after[p] == before[p] for p in untouched)  # nothing re-stored but what the job wrote
    got = {
        p: sandboxed.ctx.storage.local_file(f["xetHash"]).read_bytes()
        for f in sandboxed.ctx.store.files(bucket)
        for p in [f["path"]]
    }
    assert (got["w/edit.txt"], got["w/moved.txt"], got["w/dir/c.txt"]) == (b"v2", b"keep-0", b"c")
    assert got["w/renamed/deep/s.txt"] == b"s"


def test_a_bucket_folder_mounted_again_shows_what_changed_since(sandboxed: Emulator, api: HfApi, ns: str) -> None:
    # Jobs that mount the same folder share its links between them: each must still see the bucket as it is.
    bucket = f"{ns}/shared"
    api.create_bucket(bucket)
    api.batch_bucket_files(bucket, add=[(b"1", "a/x.txt"), (b"y", "a/y.txt"), (b"o", "other/o.txt")])
    show = """
        import os
        from pathlib import Path
        print(sorted((os.path.relpath(os.path.join(d, f), '/in'), Path(d, f).read_text())
                     for d, _, fs in os.walk('/in') for f in fs))
        """
    volume = Volume(type="bucket", source=bucket, path="a", mount_path="/in", read_only=True)
    assert _run(api, ns, show, volumes=[volume])[1] == ["[('x.txt', '1'), ('y.txt', 'y')]"]
    api.batch_bucket_files(bucket, add=[(b"2", "a/x.txt"), (b"z", "a/z/z.txt")], delete=["a/y.txt"])
    assert _run(api, ns, show, volumes=[volume])[1] == ["[('x.txt', '2'), ('z/z.txt', 'z')]"]
    writer = Volume(type="bucket", source=bucket, path="a", mount_path="/in")
    _run(api, ns, "open('/in/w.txt', 'w').write('w'); import os; os.remove('/in/z/z.txt')", volumes=[writer])
    assert _run(api, ns, show, volumes=[volume])[1] == ["[('w.txt', 'w'), ('x.txt', '2')]"]


def _read_mounted(path: str) -> str:
    return Path(path).read_text()


def _write_mounted(path: str, text: str) -> list[str]:
    Path(path).write_text(text)
    return sorted(os.listdir(os.path.dirname(path)))


def test_remote_function_reads_and_writes_volumes_at_their_mount_paths(
    sandboxed: Emulator, remote_emulator: Emulator, api: HfApi, ns: str
) -> None:
    api.create_bucket(f"{ns}/inputs")
    api.create_bucket(f"{ns}/outputs")
    api.batch_bucket_files(f"{ns}/inputs", add=[(b"x,y\n3,4\n", "train.csv")])
    read = remote(timeout=120, volumes=[f"hf://buckets/{ns}/inputs:/mnt/data"])(_read_mounted)
    assert read("/mnt/data/train.csv") == "x,y\n3,4\n"
    write = remote(timeout=120, volumes=[f"hf://buckets/{ns}/outputs/run1:/mnt/out:rw"])(_write_mounted)
    assert write("/mnt/out/metrics.json", '{"loss": 0.1}') == ["metrics.json"]
    paths = [f.path for f in api.list_bucket_tree(f"{ns}/outputs", recursive=True) if f.type == "file"]
    assert paths == ["run1/metrics.json"]


# -- no reach into the host --------------------------------------------------------------------------
def test_job_cannot_reach_the_callers_files_processes_or_tmp(
    sandboxed: Emulator, api: HfApi, ns: str, tmp_path: Path
) -> None:
    hf_home = Path(os.environ["HF_HOME"])
    token_file = hf_home / "token"
    token_file.write_text("hf_callers_own_token")
    home_file = Path.home() / f".hfremote-sandbox-test-{uuid.uuid4().hex}"
    home_file.write_text("private")
    host_tmp = Path("/tmp") / f"hfremote-sandbox-test-{uuid.uuid4().hex}"
    try:
        targets = [str(token_file), f"/proc/{os.getpid()}/environ", str(home_file), "/etc/shadow", __file__]
        code = f"""
            from pathlib import Path
            for target in {targets!r}:
                try:
                    Path(target).read_bytes()
                    print('read', target)
                except OSError:
                    print('no')
            Path({str(host_tmp)!r}).write_text('escaped?')
            print('wrote tmp')
            """
        _, lines = _run(api, ns, code)
        assert lines == ["no"] * len(targets) + ["wrote tmp"]  # its own /tmp, not the host's
        assert not host_tmp.exists()
    finally:
        home_file.unlink()
        token_file.unlink()


def test_host_variables_do_not_reach_the_job(emulator: Emulator, api: HfApi, ns: str, monkeypatch: Any) -> None:
    monkeypatch.setenv("UV_PUBLISH_TOKEN", "pypi-host-secret")
    monkeypatch.setenv("MY_HOST_SECRET", "host-secret")
    monkeypatch.setenv("HF_TOKEN", "hf_host_token")
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    job_id, lines = _run(api, ns, code, flavor="cpu-upgrade", env={"MINE": "1"}, secrets={"S": "s3"})
    env = json.loads(lines[-1])
    assert not {"UV_PUBLISH_TOKEN", "MY_HOST_SECRET", "HF_TOKEN"} & set(env)
    assert "host-secret" not in lines[-1] and "hf_host_token" not in lines[-1]
    assert (env["MINE"], env["S"], env["JOB_ID"], env["HF_ENDPOINT"]) == ("1", "s3", job_id, emulator.endpoint)
    assert (env["CPU_CORES"], env["MEMORY"], env["ACCELERATOR"]) == ("8", "32Gi", "none")
    if emulator.sandboxed:
        assert env["HOME"] == "/root" and not env["PATH"].startswith(str(Path.home()))


# -- nothing left behind -----------------------------------------------------------------------------
def test_setsid_daemon_ends_with_its_job(sandboxed: Emulator, api: HfApi, ns: str) -> None:
    marker = f"daemon-{uuid.uuid4().hex}"
    code = f"""
        import subprocess, sys
        subprocess.Popen(['setsid', sys.executable, '-c',
                          'import time\\nwhile True: print("tick", flush=True); time.sleep(0.05)  # {marker}'])
        print('started')
        """
    job_id, _ = _run(api, ns, code)
    poll(lambda: not processes_with(marker), timeout=10, what="the daemon to end with its job")
    after = _logs(api, job_id, ns)
    assert "started" in after
    assert _logs(api, job_id, ns) == after  # the daemon is gone: its log no longer grows


def _emulator_command(state: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hfremote.cli", "emulator", "--port", "0", "--state-dir", str(state), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _spawns_marked_child(marker: str, daemon: bool) -> str:
    """A job's code that starts a sleeping child (in a session of its own if `daemon`) whose command line
    holds `marker`; the job's own command line does not (the marker is put together at run time)."""
    half = len(marker) // 2
    prefix = "['setsid', sys.executable]" if daemon else "[sys.executable]"
    return (
        "import subprocess, sys, time\n"
        f"marker = {marker[:half]!r} + {marker[half:]!r}\n"
        f"subprocess.Popen({prefix} + ['-c', 'import time; time.sleep(300)  # ' + marker])\n"
        "time.sleep(300)\n"
    )


def test_kill_9_of_the_emulator_leaves_no_job_running(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = _emulator_command(state, "--token", TOKEN)
    marker = f"orphan-{uuid.uuid4().hex}"
    try:
        assert proc.stdout is not None
        endpoint = proc.stdout.readline().split()[4]
        api = HfApi(endpoint=endpoint, token=TOKEN)
        sleeper = _spawns_marked_child(marker, daemon=False)
        job = api.run_job(image=IMAGE, command=["python", "-c", sleeper], namespace="emulator-user")
        poll(lambda: processes_with(marker), timeout=60, what="the job to start")
        proc.kill()  # SIGKILL: the emulator cannot clean up
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    with Emulator(state, token=TOKEN) as again:
        # The sandbox's processes die with the emulator; host processes at the latest when it starts again.
        poll(lambda: not processes_with(marker), timeout=10, what="the job's processes to end")
        info = HfApi(endpoint=again.endpoint, token=TOKEN).inspect_job(job_id=job.id, namespace="emulator-user")
        assert info.status.stage == "ERROR"


def test_sandboxed_jobs_die_with_their_emulator(sandboxed: Emulator, tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = _emulator_command(state, "--token", TOKEN, "--sandbox", "on")
    marker = f"orphan-{uuid.uuid4().hex}"
    try:
        assert proc.stdout is not None
        endpoint = proc.stdout.readline().split()[4]
        api = HfApi(endpoint=endpoint, token=TOKEN)
        daemon = _spawns_marked_child(marker, daemon=True)
        api.run_job(image=IMAGE, command=["python", "-c", daemon], namespace="emulator-user")
        pids = poll(lambda: processes_with(marker), timeout=60, what="the job's daemon to start")
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    poll(lambda: not processes_with(marker), timeout=30, what=f"the job's processes {pids} to end")


# -- GPUs ----------------------------------------------------------------------------------------------
def test_simulated_gpu_pool(tmp_path: Path) -> None:
    with Emulator(tmp_path / "gpus", token=TOKEN, gpus=4, max_running=4) as emu:
        api = HfApi(endpoint=emu.endpoint, token=TOKEN)
        code = "import os, time; print(repr(os.environ.get('CUDA_VISIBLE_DEVICES'))); time.sleep(0.5)"
        big = [
            api.run_job(image=IMAGE, command=["python", "-c", code], flavor="a10g-largex4", namespace=emu.user)
            for _ in range(2)
        ]
        cpu = api.run_job(image=IMAGE, command=["python", "-c", code], flavor="cpu-basic", namespace=emu.user)
        for job in [*big, cpu]:
            assert wait_stage(api, job.id, emu.user, timeout=120).status.stage == "COMPLETED"
        assert _logs(api, big[0].id, emu.user) == ["'0,1,2,3'"]
        assert _logs(api, big[1].id, emu.user) == ["'0,1,2,3'"]
        assert _logs(api, cpu.id, emu.user) == ["''"]
        first, second = (emu.ctx.store.job(j.id) for j in big)
        assert first is not None and second is not None
        assert second["startedAt"] >= first["finishedAt"]  # one after the other: four GPUs, four each

        too_big = api.run_job(image=IMAGE, command=["true"], flavor="a100x8", namespace=emu.user)
        done = wait_stage(api, too_big.id, emu.user)
        assert done.status.stage == "ERROR" and "needs 8 GPUs" in (done.status.message or "")


# -- state at rest -------------------------------------------------------------------------------------
def test_state_is_private_and_secrets_are_not_in_clear(tmp_path: Path) -> None:
    state = tmp_path / "state"
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    with Emulator(state, token=TOKEN) as emu:
        api = HfApi(endpoint=emu.endpoint, token=TOKEN)
        job = api.run_job(
            image=IMAGE,
            command=["python", "-c", "import os; print(os.environ['S'] == 's3cr3t' or 'ok')"],
            secrets={"S": secret},
            namespace=emu.user,
        )
        wait_stage(api, job.id, emu.user)
        api.create_scheduled_job(
            image=IMAGE, command=["true"], schedule="@daily", secrets={"T": secret}, namespace=emu.user
        )
        assert _logs(api, job.id, emu.user) == ["ok"]
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in ("emulator.sqlite3", "secrets.key"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    stored = b"".join(p.read_bytes() for p in state.glob("emulator.sqlite3*"))
    assert secret.encode() not in stored
    with sqlite3.connect(state / "emulator.sqlite3") as db:
        assert all(
            secret not in row[0] for row in db.execute("SELECT secrets FROM jobs UNION SELECT secrets FROM scheduled")
        )
    with Emulator(state, token=TOKEN) as again:  # still there for reruns and schedules after a restart
        assert again.ctx.store.job_secrets(job.id) == {"S": secret}


def test_sandbox_option_is_checked(tmp_path: Path, monkeypatch: Any) -> None:
    with pytest.raises(ValueError, match="sandbox 'maybe'"):
        Emulator(tmp_path / "a", sandbox="maybe")
    monkeypatch.setenv("HFREMOTE_EMULATOR_SANDBOX", "off")
    with Emulator(tmp_path / "b", token=TOKEN) as emu:
        assert not emu.sandboxed
    monkeypatch.setenv("HFREMOTE_EMULATOR_SANDBOX", "sometimes")
    with pytest.raises(ValueError, match="HFREMOTE_EMULATOR_SANDBOX"):
        Emulator(tmp_path / "c")


def test_emulator_command_refuses_a_bad_sandbox_setting_before_starting(tmp_path: Path) -> None:
    env = {**os.environ, "HFREMOTE_EMULATOR_SANDBOX": "bogus"}
    args = [sys.executable, "-m", "hfremote.cli", "emulator", "--port", "0", "--state-dir", str(tmp_path / "s")]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert (
        done.returncode == 2 and "HFREMOTE_EMULATOR_SANDBOX 'bogus'" in done.stderr and "auto, on, off" in done.stderr
    )
    assert not (tmp_path / "s").exists()
