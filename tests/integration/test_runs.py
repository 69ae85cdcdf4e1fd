"""Runs that survive anything: a dead endpoint, a restarted one, faults on the engine's routes, a killed
client (leases), attach and resume from another process, detach, SIGTERM, idempotent schedule writes.

Each test reproduces a finding of the engine issue on the real client against the emulator; the
subprocess tests send real signals to real client processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Lines, hfremote_on, poll, run_script, subprocess_env
from huggingface_hub import HfApi

import hfremote
from hfremote import BackendError, JobFailedError, RemoteFuture, RemoteRun, remote
from hfremote._run import chunk_indexes
from hfremote.emulator import Emulator

TOKEN = "hf_test_token_1234567890"
DEADLINE = 120.0


@pytest.fixture
def wide(tmp_path: Path) -> Iterator[Emulator]:
    with Emulator(tmp_path / "wide", token=TOKEN, max_running=6) as emu, hfremote_on(emu):
        yield emu


def run_jobs(emulator: Emulator, run_id: str) -> list[dict[str, Any]]:
    return [job for job in emulator.jobs() if (job.get("labels") or {}).get("hfremote-run") == run_id]


def stages(emulator: Emulator, run_id: str) -> list[str]:
    return sorted(job["status"]["stage"] for job in run_jobs(emulator, run_id))


def watched(run_id: str) -> int:
    """How many jobs of the run hfremote's engine watches (a map's jobs once their creations are answered)."""
    from hfremote._engine import engine

    with engine()._lock:
        return sum(len(run.futures) for run in engine()._runs.values() if run.run_id == run_id)


def emulator_process(tmp_path: Path, max_running: int) -> tuple[subprocess.Popen[str], str]:
    """`hfremote emulator` in a process of its own (to be killed with SIGKILL), and its endpoint."""
    args = ["--port", "0", "--state-dir", str(tmp_path / "state"), "--token", TOKEN, "--max-running", str(max_running)]
    server = subprocess.Popen(
        [sys.executable, "-m", "hfremote.cli", "emulator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    endpoint = Lines(server.stdout).wait_for(r"serving on (http://\S+)", DEADLINE).group(1)  # type: ignore[arg-type]
    return server, endpoint


# -- the endpoint goes away --------------------------------------------------------------------------
def test_a_map_whose_endpoint_dies_for_good_fails_within_the_bound(tmp_path: Path) -> None:
    # `hfremote emulator` in its own process, killed with SIGKILL mid-map: nothing answers on its port again.
    server, endpoint = emulator_process(tmp_path, 4)
    try:
        hfremote.configure(endpoint=endpoint, token=TOKEN, unreachable_timeout=3)

        @remote(timeout=300)
        def slow(x: int) -> int:
            import time

            time.sleep(15)  # (the killed emulator leaves its jobs behind: they end by themselves)
            return x

        results = slow.map(range(4), max_parallel=4, progress=False)
        errors: list[BaseException] = []

        def consume() -> None:
            try:
                list(results)
            except BaseException as e:
                errors.append(e)

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        api = HfApi(endpoint=endpoint, token=TOKEN)
        poll(
            lambda: (
                sum(
                    j.status.stage == "RUNNING"
                    for j in api.list_jobs(namespace="emulator-user", labels={"hfremote-run": results.run_id})
                )
                == 4
            ),
            DEADLINE,
            what="the map's jobs to run",
        )
        # and the map has the answers to its creations (a job runs before its creation is answered: a
        # kill in between fails the creation, not the watching this test is about)
        poll(lambda: watched(results.run_id) == 4, DEADLINE, what="the map to watch its jobs")
        server.kill()  # for good
        server.wait()
        thread.join(DEADLINE)
        assert not thread.is_alive(), "the map hung after its endpoint died"
        assert len(errors) == 1 and isinstance(errors[0], BackendError), errors
        assert "lost contact" in str(errors[0]) and f"RemoteRun.attach({results.run_id!r})" in str(errors[0])
    finally:
        hfremote.configure()
        server.kill()
        server.wait()


def test_a_map_goes_on_when_its_emulator_restarts_on_the_same_state(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = Emulator(state, token=TOKEN, max_running=2).start()
    port = first.port
    hfremote.configure(endpoint=first.endpoint, token=TOKEN, unreachable_timeout=60)
    second: Emulator | None = None
    try:

        @remote(timeout=120)
        def nap(x: int) -> int:
            import time

            time.sleep(0.5)
            return x * 10

        results = nap.map(range(8), max_parallel=2, retries=2, logs="none", progress=False)
        got = [next(results)]  # the map is under way
        first.stop()  # jobs running now end ERROR ("the emulator stopped"): the map's retries run them again
        second = Emulator(state, token=TOKEN, max_running=2, port=port).start()
        got += list(results)
        assert got == [x * 10 for x in range(8)]  # every result, once, in order
    finally:
        hfremote.configure()
        first.stop()
        if second is not None:
            second.stop()


def test_a_refused_listing_does_not_kill_the_engine(wide: Emulator) -> None:
    # A 400 on the run's listing used to escape the watcher's tick and kill its thread for good.
    wide.faults.add(f"400 GET /api/jobs/{wide.user} count=5")

    @remote(timeout=60)
    def plus(x: int) -> int:
        return x + 1

    futures = [plus.submit(i) for i in range(3)]
    assert [f.result(timeout=DEADLINE) for f in futures] == [1, 2, 3]


def test_an_unexpected_error_in_a_tick_is_logged_and_the_engine_goes_on(
    wide: Emulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from hfremote._engine import Engine

    real = Engine._tick
    raised: list[int] = []

    def broken_once(self: Engine, run: Any) -> None:
        if not raised:
            raised.append(1)
            raise RuntimeError("a bug in a tick")
        real(self, run)

    monkeypatch.setattr(Engine, "_tick", broken_once)

    @remote(timeout=60)
    def one() -> int:
        return 1

    assert one.submit().result(timeout=DEADLINE) == 1
    assert raised and "unexpected error watching run" in caplog.text


def test_a_dead_log_route_does_not_fail_a_call_whose_job_succeeded(wide: Emulator) -> None:
    wide.faults.add(f"503 GET /api/jobs/{wide.user}/*/logs rate=1")

    @remote(timeout=60)
    def answer() -> int:
        print("hello")
        return 42

    assert answer() == 42


def test_cancel_returns_at_once_and_the_job_is_cancelled(wide: Emulator) -> None:
    @remote(timeout=300)
    def forever() -> None:
        import time

        time.sleep(300)

    future = forever.submit()
    poll(lambda: future.stage == "RUNNING", DEADLINE, what="the job to run")
    wide.faults.add(f"503 POST /api/jobs/{wide.user}/*/cancel count=2")  # the request is retried in the background
    assert future.cancel() is True and future.cancelled()
    poll(lambda: wide.jobs()[0]["status"]["stage"] == "CANCELED", DEADLINE, what="the cancel to reach the job")


# -- attach ------------------------------------------------------------------------------------------
def test_attaching_a_chunk_job_gives_its_results(wide: Emulator) -> None:
    @remote(timeout=60)
    def triple(x: int) -> int:
        if x == 2:
            raise ValueError("two")
        return 3 * x

    results = triple.map(range(4), chunksize=4, return_exceptions=True, logs="none", progress=False)
    assert [r if not isinstance(r, ValueError) else "E" for r in results] == [0, 3, "E", 9]
    (job,) = run_jobs(wide, results.run_id)
    chunk = RemoteFuture.attach(job["id"]).result(timeout=DEADLINE)
    assert [chunk[0], chunk[1], chunk[3]] == [0, 3, 9] and isinstance(chunk[2], ValueError)
    assert [
        r for r in RemoteRun.attach(results.run_id).results(return_exceptions=True) if not isinstance(r, ValueError)
    ] == [0, 3, 9]


def test_attaching_an_unknown_run_says_so(wide: Emulator) -> None:
    with pytest.raises(hfremote.HFRemoteError, match="no run"):
        RemoteRun.attach("20200101T000000-abcdef")


# -- killed clients: leases, attach and resume from another process ---------------------------------
MODULE = """
import time


def work(x):
    time.sleep({sleep})
    return x * x
"""

CLIENT = """
import sys
import hfremote
from hfremote import remote
from {module} import work

hfremote.configure(lease_seconds={lease})
fn = remote(timeout=300, detach={detach})(work)


def main():
    results = fn.map(range({inputs}), chunksize={chunksize}, max_parallel={parallel}, progress=False)
    print("RUN", results.run_id, flush=True)
    for value in results:
        print("VALUE", value, flush=True)


if {threaded}:  # the map runs in a worker thread, as in a web server or a notebook's executor
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        pool.submit(main).result()
else:
    main()
"""

ATTACHER = """
from hfremote import RemoteRun

print("ATTACHED", flush=True)
for value in RemoteRun.attach("{run_id}").results():
    print("VALUE", value, flush=True)
"""


def start_client(
    emulator: Emulator,
    tmp_path: Path,
    name: str,
    *,
    sleep: float,
    lease: float = 120,
    detach: bool = False,
    inputs: int = 4,
    chunksize: int = 1,
    parallel: int = 4,
    threaded: bool = False,
) -> tuple[subprocess.Popen[str], Lines, str]:
    module = f"work_{name}"
    (tmp_path / f"{module}.py").write_text(MODULE.format(sleep=sleep))
    script = tmp_path / f"client_{name}.py"
    script.write_text(
        CLIENT.format(
            module=module,
            lease=lease,
            detach=detach,
            inputs=inputs,
            chunksize=chunksize,
            parallel=parallel,
            threaded=threaded,
        )
    )
    env = subprocess_env(emulator, tmp_path / "hf-home")
    env["PYTHONPATH"] = str(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out = Lines(proc.stdout)  # type: ignore[arg-type]
    Lines(proc.stderr)  # type: ignore[arg-type]
    run_id = out.wait_for(r"^RUN (\S+)", DEADLINE).group(1)
    return proc, out, run_id


def test_a_killed_clients_jobs_end_with_its_lease_unless_detached(wide: Emulator, tmp_path: Path) -> None:
    attached, _, kept = start_client(wide, tmp_path, "kept", sleep=120, lease=3, inputs=2)
    detached, _, loose = start_client(wide, tmp_path, "loose", sleep=120, lease=3, inputs=2, detach=True)
    try:
        poll(
            lambda: stages(wide, kept) == ["RUNNING"] * 2 and stages(wide, loose) == ["RUNNING"] * 2,
            DEADLINE,
            what="both maps' jobs to run",
        )
        attached.kill()
        detached.kill()
        # The lease stops being renewed: within its 3 s (plus one look) the jobs end themselves.
        poll(lambda: stages(wide, kept) == ["ERROR"] * 2, 60, what="the killed client's jobs to end")
        assert stages(wide, loose) == ["RUNNING"] * 2  # the detached ones had as long, and go on
        logs = "\n".join(wide.ctx.logs.read(run_jobs(wide, kept)[0]["id"])[0])
        assert "stopped renewing its lease" in logs
    finally:
        for job in run_jobs(wide, loose):
            wide.ctx.runtime.cancel(job["id"])
        for proc in (attached, detached):
            proc.kill()
            proc.wait()


def test_another_process_attaches_then_resumes_a_killed_map(wide: Emulator, tmp_path: Path) -> None:
    client, out, run_id = start_client(wide, tmp_path, "resumed", sleep=0.3, inputs=12, chunksize=2, parallel=1)
    try:
        out.wait_for(r"^VALUE 9$", DEADLINE)  # inputs 0-3 are done (two chunks)
        client.kill()
        client.wait()
    finally:
        if client.poll() is None:
            client.kill()
    poll(
        lambda: all(s not in ("RUNNING", "SCHEDULING") for s in stages(wide, run_id)),
        DEADLINE,
        what="the killed client's running job to end (the attach below renews its lease meanwhile)",
    )
    sys.path.insert(0, str(tmp_path))
    try:
        from work_resumed import work  # type: ignore[import-not-found]

        run = RemoteRun.attach(run_id)
        existing = list(run.results(return_exceptions=True))
        values = [v for v in existing if not isinstance(v, Exception)]
        assert values[:2] == [0, 1] and len(values) >= 4  # every result there is, in input order
        missing = [v for v in existing if isinstance(v, Exception)]
        assert all("resume the map" in str(e) for e in missing)
        before = len(run_jobs(wide, run_id))
        resumed = remote(timeout=300)(work).map(range(12), chunksize=2, max_parallel=4, resume=run_id, progress=False)
        assert resumed.run_id == run_id
        assert list(resumed) == [x * x for x in range(12)]
    finally:
        sys.path.remove(str(tmp_path))
    jobs = run_jobs(wide, run_id)
    chunks = Counter(job["labels"]["hfremote-call"] for job in jobs)
    assert all(count == 1 for count in chunks.values()), chunks  # one job per chunk over both processes
    assert len(jobs) > before
    ran = [
        i
        for job in jobs
        if job["status"]["stage"] == "COMPLETED"
        for i in chunk_indexes(job["labels"]["hfremote-call"]) or ()
    ]
    assert sorted(ran) == list(range(12))  # every input ran exactly once over both processes


# -- signals and detach ------------------------------------------------------------------------------
def test_sigterm_cancels_the_maps_jobs_like_ctrl_c(wide: Emulator, tmp_path: Path) -> None:
    client, _, run_id = start_client(wide, tmp_path, "termed", sleep=120, inputs=2)
    try:
        poll(lambda: stages(wide, run_id) == ["RUNNING"] * 2, DEADLINE, what="the jobs to run")
        client.send_signal(signal.SIGTERM)
        assert client.wait(DEADLINE) == -signal.SIGTERM
        poll(lambda: stages(wide, run_id) == ["CANCELED"] * 2, DEADLINE, what="the jobs to be cancelled")
    finally:
        client.kill()
        client.wait()


def test_ctrl_c_on_a_detached_map_leaves_its_jobs_running(wide: Emulator, tmp_path: Path) -> None:
    client, _, run_id = start_client(wide, tmp_path, "ctrl_c", sleep=120, inputs=2, detach=True)
    try:
        poll(lambda: stages(wide, run_id) == ["RUNNING"] * 2, DEADLINE, what="the jobs to run")
        client.send_signal(signal.SIGINT)
        client.wait(DEADLINE)
        assert stages(wide, run_id) == ["RUNNING"] * 2
    finally:
        for job in run_jobs(wide, run_id):
            wide.ctx.runtime.cancel(job["id"])
        client.kill()
        client.wait()


# -- schedules ---------------------------------------------------------------------------------------
def test_a_trigger_whose_answer_is_lost_makes_one_run(wide: Emulator) -> None:
    @remote.schedule("@yearly", timeout=60, name="once-only")
    def ping() -> str:
        return "pong"

    ping.deploy()
    wide.faults.add(f"drop POST /api/scheduled-jobs/{wide.user}/*/trigger count=1")
    run = ping.trigger()
    assert run.result(timeout=DEADLINE) == "pong"
    triggered = [job for job in wide.jobs() if (job.get("labels") or {}).get("hfremote-schedule") == "once-only"]
    assert len(triggered) == 1


def test_a_deploy_whose_answer_is_lost_makes_one_schedule(wide: Emulator) -> None:
    @remote.schedule("@yearly", timeout=60, name="single")
    def tick() -> int:
        return 1

    wide.faults.add(f"drop POST /api/scheduled-jobs/{wide.user} count=1")
    tick.deploy()
    assert len(wide.ctx.store.all_scheduled(wide.user)) == 1


def test_setup_failures_in_the_job_are_job_failed_errors(wide: Emulator) -> None:
    """A run whose manifest names another cloudpickle: the job refuses to start the call, and the caller
    gets a JobFailedError that says why (it used to be a bare HFRemoteError)."""
    import hfremote._function as function

    @remote(timeout=60)
    def fine() -> int:
        return 1

    run = function.new_run(fine.function, fine.settings)
    files = run.shared_files()
    manifest = b'{"python": "%s", "cloudpickle": "0.0.1"}' % run.options.python.encode()
    run.shared_files = lambda: [(manifest if p.endswith("manifest.json") else d, p) for d, p in files]  # type: ignore[method-assign]
    with pytest.raises(JobFailedError, match=r"caller has 0\.0\.1"):
        function.launch_one(run, b"").result(timeout=DEADLINE)


def test_a_later_client_cancels_the_jobs_of_runs_whose_lease_went_stale(wide: Emulator) -> None:
    """The backstop where a job cannot see its lease: jobs made by hand with a run's layout and a command
    that never looks at it. One run's lease is left alone (its client is gone), one is renewed (its
    client lives), one has none (detached), one is renewed too seldom to be judged; only the first
    run's job is cancelled."""
    from hfremote._config import current_hub
    from hfremote._remote_run import cancel_stale_runs
    from hfremote._run import SHARED_MOUNT, Layout, lease_record

    hub = current_hub()
    ns = hub.namespace()
    bucket = hub.bucket(ns)
    api = HfApi(endpoint=wide.endpoint, token=wide.token)
    jobs = {}
    runs = ("20260101T000000-aaaaaa", "20260101T000000-bbbbbb", "20260101T000000-cccccc", "20260101T000000-dddddd")
    for run_id in runs:
        layout = Layout.of_run(run_id)
        if not run_id.endswith("cccccc"):  # d: renewed every 30 min, too seldom to judge within a sweep
            hub.upload(bucket, [(lease_record(7200.0 if run_id.endswith("dddddd") else 1.0, False), layout.lease)])
        volumes = [
            hfremote_volume(bucket, SHARED_MOUNT, layout.shared, True),
            hfremote_volume(bucket, "/hfremote/chunk", layout.chunk("0-1"), False),
        ]
        info = api.run_job(
            image="python:3.12",
            command=["python", "-c", "import time; time.sleep(120)"],
            labels={"hfremote-run": run_id, "hfremote-call": "0-1"},
            volumes=volumes,
            namespace=ns,
        )
        jobs[run_id] = info.id

    renewing = threading.Event()

    def renew_b(seconds: float) -> None:  # the live client of run b renews while the sweep waits
        layout = Layout.of_run("20260101T000000-bbbbbb")
        for _ in range(int(seconds / 0.25) + 1):
            hub.upload(bucket, [(lease_record(1.0, False), layout.lease)])
            renewing.wait(0.25)

    assert cancel_stale_runs(hub, ns, wait=renew_b) == 1
    stage = {run_id: api.inspect_job(job_id=job, namespace=ns).status.stage for run_id, job in jobs.items()}
    assert stage == {
        "20260101T000000-aaaaaa": "CANCELED",
        "20260101T000000-bbbbbb": "RUNNING",
        "20260101T000000-cccccc": "RUNNING",
        "20260101T000000-dddddd": "RUNNING",
    }, stage
    for job in jobs.values():
        api.cancel_job(job_id=job, namespace=ns)


def hfremote_volume(bucket: str, mount: str, path: str, read_only: bool) -> Any:
    from huggingface_hub import Volume

    return Volume(type="bucket", source=bucket, mount_path=mount, read_only=read_only, path=path)


# -- findings of an attack on the features above ------------------------------------------------------
def test_sigterm_from_a_thread_started_map_still_cancels_its_jobs(wide: Emulator, tmp_path: Path) -> None:
    client, _, run_id = start_client(wide, tmp_path, "threaded", sleep=120, inputs=2, threaded=True)
    try:
        poll(lambda: stages(wide, run_id) == ["RUNNING"] * 2, DEADLINE, what="the jobs to run")
        client.send_signal(signal.SIGTERM)
        client.wait(DEADLINE)
        poll(lambda: stages(wide, run_id) == ["CANCELED"] * 2, DEADLINE, what="the jobs to be cancelled")
    finally:
        client.kill()
        client.wait()


def test_sigterm_of_a_process_that_only_attached_leaves_the_runs_jobs_alone(wide: Emulator, tmp_path: Path) -> None:
    owner, _, run_id = start_client(wide, tmp_path, "owner", sleep=120, inputs=2, detach=True)
    script = tmp_path / "attacher.py"
    script.write_text(ATTACHER.format(run_id=run_id))
    try:
        poll(lambda: stages(wide, run_id) == ["RUNNING"] * 2, DEADLINE, what="the jobs to run")
        owner.kill()
        attacher = subprocess.Popen(
            [sys.executable, str(script)],
            env=subprocess_env(wide, tmp_path / "hf-home"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        Lines(attacher.stdout).wait_for("ATTACHED", DEADLINE)  # type: ignore[arg-type]
        attacher.send_signal(signal.SIGTERM)
        attacher.wait(DEADLINE)
        assert stages(wide, run_id) == ["RUNNING"] * 2  # an observer's end is not the run's
    finally:
        for job in run_jobs(wide, run_id):
            wide.ctx.runtime.cancel(job["id"])
        owner.kill()
        owner.wait()


def test_a_detached_resume_of_a_killed_run_keeps_its_running_jobs(wide: Emulator, tmp_path: Path) -> None:
    client, _, run_id = start_client(wide, tmp_path, "adopted", sleep=8, lease=5, inputs=2)
    poll(lambda: stages(wide, run_id) == ["RUNNING"] * 2, DEADLINE, what="the jobs to run")
    client.kill()
    client.wait()
    sys.path.insert(0, str(tmp_path))
    try:
        from work_adopted import work  # type: ignore[import-not-found]

        # Every chunk still runs, so nothing new is uploaded: the lease must be marked detached anyway.
        resumed = remote(timeout=300, detach=True)(work).map(range(2), resume=run_id, progress=False)
        assert list(resumed) == [0, 1]
    finally:
        sys.path.remove(str(tmp_path))
    assert stages(wide, run_id) == ["COMPLETED"] * 2


def test_two_processes_resuming_one_run_at_once_keep_one_job_per_chunk(wide: Emulator, tmp_path: Path) -> None:
    client, out, run_id = start_client(wide, tmp_path, "twice", sleep=0.5, inputs=8, chunksize=1, parallel=1)
    out.wait_for(r"^VALUE 0$", DEADLINE)
    client.kill()  # chunks uploaded ahead of their jobs are left: both resumes below want to create them
    client.wait()
    sys.path.insert(0, str(tmp_path))
    try:
        from work_twice import work  # type: ignore[import-not-found]

        fn = remote(timeout=300)(work)
        got: list[list[int]] = [[], []]
        threads = [
            threading.Thread(target=lambda i=i: got[i].extend(fn.map(range(8), resume=run_id, progress=False)))
            for i in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE)
    finally:
        sys.path.remove(str(tmp_path))
    assert got == [[x * x for x in range(8)]] * 2
    kept = Counter(j["labels"]["hfremote-call"] for j in run_jobs(wide, run_id) if j["status"]["stage"] != "CANCELED")
    assert all(count == 1 for count in kept.values()), kept


def test_a_job_that_starts_with_a_long_stale_lease_ends_at_once(tmp_path: Path) -> None:
    """A job queued while its client died: its first look at the lease already finds it stale."""
    import json
    import time

    from hfremote._packing import render_entry

    shared, chunk = tmp_path / "shared", tmp_path / "chunk"
    shared.mkdir()
    chunk.mkdir()
    (shared / "entry.py").write_text(render_entry(f"{sys.version_info.major}.{sys.version_info.minor}", []))
    (shared / "lease").write_text(json.dumps({"renewed": time.time() - 100, "ttl": 2, "detached": False}))
    # No manifest: the job would fail to set up, but the lease watch starts first and must end it first.
    (shared / "manifest.json").write_text("{}")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import runpy, time, sys; sys.argv = ['entry', '{chunk}']; "
            f"import threading; exec(open('{shared / 'entry.py'}').read().split('if __name__')[0]); "
            f"_watch_lease('{shared / 'lease'}'); time.sleep(60)",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 3, done.stderr
    assert "stopped renewing its lease" in done.stderr


def test_configure_changes_only_the_settings_it_names() -> None:
    from hfremote import _config

    try:
        hfremote.configure(lease_seconds=20)
        hfremote.configure(unreachable_timeout=5)
        assert (_config.lease_seconds(), _config.unreachable_timeout()) == (20, 5)
    finally:
        hfremote.configure()
    assert (_config.lease_seconds(), _config.unreachable_timeout()) == (120, 300)


def test_bad_run_ids_are_refused_clearly(wide: Emulator) -> None:
    @remote(timeout=60)
    def ident(x: int) -> int:
        return x

    for bad in ("", "  ", 5):
        with pytest.raises(hfremote.OptionsError, match="resume="):
            ident.map([1], resume=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="job_id"):
        RemoteFuture.attach("")
    with pytest.raises(TypeError, match="run_id"):
        RemoteRun.attach("")


def test_a_call_on_a_dead_endpoint_gives_up_within_the_bound(tmp_path: Path) -> None:
    """Nested retries (each of huggingface_hub's own inside each of ours) once took minutes here."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hfremote.configure(endpoint=f"http://127.0.0.1:{port}", token=TOKEN, unreachable_timeout=2)
    errors: list[BaseException] = []

    @remote(timeout=60)
    def never() -> None:
        return None

    def call() -> None:
        try:
            never.submit()
        except BaseException as e:
            errors.append(e)

    try:
        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        thread.join(90)  # one look with huggingface_hub's own retries (~23 s), then the bound
        assert not thread.is_alive(), "the call went on retrying past its bound"
        assert len(errors) == 1 and isinstance(errors[0], BackendError), errors
    finally:
        hfremote.configure()


DYING_CLIENT = """
import hfremote
from hfremote import BackendError, remote

hfremote.configure(unreachable_timeout=2, lease_seconds=8)


@remote(timeout=300)
def slow(x):
    import time

    time.sleep(15)
    return x


results = slow.map(range(2), progress=False)
print("RUN", results.run_id, flush=True)
try:
    list(results)
except BackendError:
    print("END", flush=True)
"""


def test_a_client_whose_endpoint_died_exits_promptly(tmp_path: Path) -> None:
    """Its background requests (lease renewals, cancels, reads) must not hold the interpreter's exit."""
    server, endpoint = emulator_process(tmp_path, 2)
    client = None
    try:
        script = tmp_path / "dying.py"
        script.write_text(DYING_CLIENT)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HFREMOTE_"))}
        env.update({"HF_ENDPOINT": endpoint, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf-home")})
        client = subprocess.Popen(
            [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        out = Lines(client.stdout)  # type: ignore[arg-type]
        run_id = out.wait_for(r"^RUN (\S+)", DEADLINE).group(1)
        api = HfApi(endpoint=endpoint, token=TOKEN)
        poll(
            lambda: (
                [j.status.stage for j in api.list_jobs(namespace="emulator-user", labels={"hfremote-run": run_id})]
                == ["RUNNING"] * 2
            ),
            DEADLINE,
            what="the jobs to run",
        )
        server.kill()
        server.wait()
        out.wait_for("^END$", DEADLINE)
        client.wait(timeout=45)  # (it took 130-160 s while lease renewals held the exit)
    finally:
        for proc in (server, client):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


# -- findings of a newcomer's trial ------------------------------------------------------------------
def test_a_second_emulator_on_a_state_directory_in_use_is_refused(tmp_path: Path) -> None:
    with Emulator(tmp_path / "state", token=TOKEN), pytest.raises(RuntimeError, match="in use by another emulator"):
        Emulator(tmp_path / "state", token=TOKEN).start()  # it would have ended the first one's jobs
    with Emulator(tmp_path / "state", token=TOKEN):  # free again once the first one stopped
        pass


def test_a_frozen_endpoint_fails_the_futures_within_the_bound(tmp_path: Path) -> None:
    """SIGSTOP: the connection is accepted and never answered (the client sends without a read timeout)."""
    server, endpoint = emulator_process(tmp_path, 2)
    try:
        hfremote.configure(endpoint=endpoint, token=TOKEN, unreachable_timeout=3)

        @remote(timeout=300)
        def slow() -> int:
            import time

            time.sleep(20)
            return 1

        future = slow.submit()
        api = HfApi(endpoint=endpoint, token=TOKEN)
        poll(
            lambda: api.inspect_job(job_id=future.job_id, namespace="emulator-user").status.stage == "RUNNING",
            DEADLINE,
            what="the job to run",
        )
        server.send_signal(signal.SIGSTOP)
        with pytest.raises(BackendError, match="lost contact"):
            future.result(timeout=DEADLINE)
    finally:
        hfremote.configure()
        server.send_signal(signal.SIGCONT)
        server.kill()
        server.wait()


def test_resuming_a_run_with_another_function_is_refused(wide: Emulator) -> None:
    @remote(timeout=60)
    def first(x: int) -> int:
        return x

    @remote(timeout=60)
    def second(x: int) -> int:
        return -x

    results = first.map(range(2), progress=False)
    assert list(results) == [0, 1]
    with pytest.raises(hfremote.OptionsError, match="is a run of first, not of second"):
        list(second.map(range(2), resume=results.run_id, progress=False))


def test_a_scheduled_runs_result_by_its_job_id(wide: Emulator) -> None:
    @remote.schedule("@yearly", timeout=60, name="by-id")
    def answer() -> int:
        return 42

    answer.deploy()
    run = answer.trigger()
    assert run.result(timeout=DEADLINE) == 42
    assert RemoteFuture.attach(run.job_id).result(timeout=DEADLINE) == 42
    answer.delete()


SUBMIT_AND_EXIT = """
from hfremote import remote


@remote(timeout=300)
def forever():
    import time

    time.sleep(300)


future = forever.submit()
print("JOB", future.job_id, flush=True)
"""


def test_jobs_a_process_never_waited_for_are_cancelled_when_it_exits(wide: Emulator, tmp_path: Path) -> None:
    done = run_script(wide, tmp_path, "submit_and_exit.py", SUBMIT_AND_EXIT, timeout=DEADLINE)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split()[1]
    assert "cancelled 1 unfinished job(s) at exit" in done.stderr
    poll(lambda: wide.ctx.store.job(job_id)["status"]["stage"] == "CANCELED", DEADLINE, what="the job's cancel")
