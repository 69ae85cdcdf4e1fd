"""Running jobs as local processes, the way the platform runs containers.

    create ──► SCHEDULING ──(a slot and its GPUs free up)──► RUNNING ──► COMPLETED | ERROR | CANCELED
                                   │ lay out volumes (_volumes), then run the command in the sandbox
                                   │ (_sandbox: volumes at their mount paths), or as a host process with
                                   │ mount paths translated in argv and env; stdout/stderr → log lines
                                   │ enforce timeoutSeconds, retry up to `attempts`, sample metrics
                                   └ sync read-write bucket volumes back, then set the terminal stage

The terminal stage is written only after the last log line and the volume sync, so a client that sees
COMPLETED always finds the whole log and every file the job wrote.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from . import _sandbox
from ._hardware import GPU_CONTROL_DEVICES, flavor_env, gpu_count, memory_bytes
from ._logs import LogBook
from ._process import end_leftover, human, kill_group, measure, slots_root, uv_cache_dir
from ._proxy import exposed_ports
from ._store import Record, Store
from ._util import Clock, iso
from ._volumes import JobFailure, Mount, Views, changes, mount_all, release, remove, translate, update_copy
from ._xet import XetStorage

TERMINAL = ("COMPLETED", "CANCELED", "ERROR", "DELETED")
DEFAULT_TIMEOUT = 30 * 60  # the platform's default when a job sets none
# The host variables a job gets: what uv needs to reach (or not) a package index, nothing else.
PASSTHROUGH_ENV = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "UV_INDEX",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_FIND_LINKS",
    "UV_OFFLINE",
    "UV_NATIVE_TLS",
    "UV_PYTHON_DOWNLOADS",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
)
# A host process also keeps the host's PATH and locale (no image of its own to take them from).
_HOST_ONLY_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "SYSTEMROOT")


@dataclass
class _Running:
    job_id: str
    folder: Path  # the job's "container": mounts, work dir, home
    cancel: threading.Event = field(default_factory=threading.Event)
    kill_reason: str | None = None
    process: subprocess.Popen[bytes] | None = None
    done: threading.Event = field(default_factory=threading.Event)
    sample: dict[str, Any] | None = None
    ps: dict[int, psutil.Process] = field(default_factory=dict)
    slot_lock: IO[bytes] | None = None
    gpus: list[str] = field(default_factory=list)
    memory_total: int | None = None  # the flavor's memory, reported by the metrics
    mounts: list[Mount] = field(default_factory=list)  # while it runs (its read-only ones follow the bucket)


class Runtime:
    def __init__(
        self,
        store: Store,
        storage: XetStorage,
        logs: LogBook,
        root: Path,
        clock: Clock,
        max_running: int,
        endpoint: Callable[[], str],
        publish: Callable[[str, list[tuple[Path, str]], list[str]], None],
        sandbox: bool = False,
        gpus: list[str] | None = None,
    ) -> None:
        self._store, self._storage, self._logs, self._clock = store, storage, logs, clock
        self._root = root
        self._slots = slots_root(root)
        self._endpoint = endpoint  # the emulator's own address: jobs reach "the Hub" there
        self._publish = publish  # stores files into a bucket, as an upload through Xet would
        self.max_running = max_running
        self.sandbox = sandbox
        self.gpus = list(gpus or [])  # the pool GPU flavors take their GPUs from, each to one job at a time
        self._lock = self.lock = threading.RLock()  # guards job records and the running set
        self._wake = threading.Condition(self._lock)
        self._running: dict[str, _Running] = {}
        self._stopping = False
        self.on_job_started: Callable[[str], None] | None = None  # fault injection hooks in here
        self._bin = self._make_bin(root / "bin")
        self._volumes = root / "volumes"
        # Read-write volumes as overlays where this file system takes them; copies elsewhere.
        self._overlay = sandbox and _sandbox.overlay_works(self._volumes / ".probe")
        self._views = Views(root / "views", store, storage) if sandbox else None
        self._dispatcher = threading.Thread(target=self._dispatch, name="emulator-dispatch", daemon=True)
        self._sampler = threading.Thread(target=self._sample, name="emulator-metrics", daemon=True)

    def start(self) -> None:
        # What an emulator that died on this state directory left running ends before any slot is reused.
        for job_id, pid, started in self._store.processes():
            end_leftover(pid, started)
            self._store.forget_process(job_id)
        remove(self._volumes)  # the volumes of jobs that were running: none of their processes is left
        remove(self._root / "views")
        # Jobs that were running when the emulator last stopped cannot be resumed: say so.
        for job in self._store.jobs(stages=["RUNNING"]):
            self._finish(job, "ERROR", "The emulator stopped while this job was running")
        self._dispatcher.start()
        self._sampler.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            running = list(self._running.values())
            self._wake.notify_all()
        for run in running:
            run.kill_reason = "The emulator stopped while this job was running"
            run.cancel.set()
            if (process := run.process) is not None:  # read once: `_spawn` clears it when the process ends
                kill_group(process, graceful=False)
        for run in running:
            run.done.wait(10)
        self._dispatcher.join(5)
        self._sampler.join(5)

    # -- records -----------------------------------------------------------------------------------
    def _update(self, job_id: str, **status: Any) -> Record:
        with self._lock:
            job = self._store.job(job_id)
            assert job is not None
            for key, value in status.items():
                if key in ("stage", "message"):
                    job["status"][key] = value
                else:
                    job[key] = value
            self._store.update_job(job)
            return job

    def _finish(self, job: Record, stage: str, message: str | None) -> None:
        with self._lock:
            current = self._store.job(job["id"])
            if current is None or current["status"]["stage"] in TERMINAL:
                return
            self._update(job["id"], stage=stage, message=message, finishedAt=iso(self._clock.now()))
        self._logs.touch(job["id"])  # following log streams end now, not at their next stage check

    def notify(self) -> None:
        """A job was created or a slot may have freed up."""
        with self._lock:
            self._wake.notify_all()

    # -- control -----------------------------------------------------------------------------------
    def cancel(self, job_id: str, reason: str | None = None, wait: float = 10.0) -> None:
        with self._lock:
            run = self._running.get(job_id)
            job = self._store.job(job_id)
            if run is None:
                if job is not None and job["status"]["stage"] not in TERMINAL:
                    self._finish(job, "CANCELED", reason or "Cancelled by the user")
                return
            run.kill_reason = reason
            run.cancel.set()
            process = run.process
        if process is not None:
            kill_group(process, graceful=True)
        run.done.wait(wait)

    def kill(self, job_id: str, reason: str) -> bool:
        """Kill a running job's processes as a node failure would: the job ends as ERROR."""
        with self._lock:
            run = self._running.get(job_id)
        process = None if run is None else run.process  # read once: `_spawn` clears it when the process ends
        if run is None or process is None:
            return False
        run.kill_reason = reason
        kill_group(process, graceful=False)
        return True

    def metrics(self, job_id: str) -> dict[str, Any] | None:
        run = self._running.get(job_id)
        return None if run is None else run.sample

    def running_count(self) -> int:
        return len(self._running)

    # -- scheduling --------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                if not self._start_waiting():
                    self._wake.wait(1.0)

    def _start_waiting(self) -> bool:
        """Start the oldest waiting jobs that fit (a slot, their GPUs, their exposed ports); whether any started.

        Jobs share the host's network, so an exposed port is held by the running job that exposes it:
        a job exposing a port that is held waits (in SCHEDULING, in order) until that job ends.
        """
        free = self.max_running - len(self._running)
        started, skipped = False, 0
        held: set[int] | None = None  # the ports running jobs expose, read once when a waiting job exposes one
        while free > 0:
            waiting = self._store.jobs(stages=["SCHEDULING"], newest_first=False, limit=free, offset=skipped)
            if not waiting:
                break
            for job in waiting:
                need = gpu_count(job.get("flavor") or "") if self.gpus else 0  # no pool: GPU flavors run on CPU
                if need > len(self.gpus):  # can never start here: say so rather than wait forever
                    self._finish(
                        job,
                        "ERROR",
                        f"Flavor {job.get('flavor')} needs {need} GPUs and this emulator has {len(self.gpus)} "
                        f"({', '.join(self.gpus)}): pick a smaller flavor",
                    )
                    continue
                gpus = self._free_gpus(need)
                ports = exposed_ports(job)
                if ports and held is None:
                    held = self.held_ports()
                if gpus is None or (ports & (held or set())):  # waits; younger jobs that fit may go first
                    skipped += 1
                    continue
                if held is not None:
                    held |= ports
                folder, slot_lock = self._free_slot()
                memory = memory_bytes(job.get("flavor", ""))
                run = self._running[job["id"]] = _Running(
                    job["id"], folder, slot_lock=slot_lock, gpus=gpus, memory_total=memory
                )
                self._update(job["id"], stage="RUNNING", message=None, startedAt=iso(self._clock.now()))
                threading.Thread(target=self._run, args=(run,), name=f"job-{job['id']}", daemon=True).start()
                started, free = True, free - 1
        return started

    def held_ports(self, except_job: str | None = None) -> set[int]:
        """The ports the running jobs expose."""
        held: set[int] = set()
        for job in self._store.jobs(stages=["RUNNING"]):
            if job["id"] != except_job:
                held |= exposed_ports(job)
        return held

    def _free_gpus(self, need: int) -> list[str] | None:
        """`need` GPUs no running job holds ([] for none), or None while too few are free."""
        if need == 0:
            return []
        busy = {gpu for run in self._running.values() for gpu in run.gpus}
        free = [gpu for gpu in self.gpus if gpu not in busy]
        return free[:need] if len(free) >= need else None

    def _free_slot(self) -> tuple[Path, IO[bytes]]:
        """A folder for the next job, and the lock that keeps it this job's while it runs.

        Slots live in the user's cache, shared by every emulator on the machine (a file lock each).
        The job's processes inherit the lock, so a slot whose job outlived its emulator stays taken.
        """
        used = {run.folder.name for run in self._running.values()}
        for slot in (str(i) for i in itertools.count()):
            if slot in used:
                continue
            lock = (self._slots / f"{slot}.lock").open("ab")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another emulator's job runs there
                lock.close()
                continue
            folder = self._slots / slot
            remove(folder)  # what a job of an emulator that died left
            return folder, lock
        raise AssertionError("unreachable")

    def _run(self, run: _Running) -> None:
        job = self._store.job(run.job_id)
        assert job is not None
        stage: str = "ERROR"
        message: str | None = "The emulator failed to run this job"
        mounts: list[Mount] = []
        try:
            mounts = mount_all(
                job.get("volumes") or [],
                self._volumes / run.job_id,  # beside the stored files, so they can be linked
                self._store,
                self._storage,
                self._views,
                self._overlay,
            )
            run.mounts = mounts
            if self.on_job_started is not None:
                self.on_job_started(run.job_id)
            stage, message = self._attempts(run, job, mounts)
        except JobFailure as e:
            stage, message = "ERROR", str(e)
            self._logs.append(run.job_id, f"Error: {e}")
        except Exception as e:  # a bug of ours must still end the job, never leave it RUNNING
            stage, message = "ERROR", f"The emulator failed to run this job: {e!r}"
        finally:
            try:
                self._sync_back(mounts)
            except Exception as e:
                if stage == "COMPLETED":
                    stage, message = "ERROR", f"Could not save the job's files to the bucket: {e}"
            release(mounts, self._views)
            self._finish(job, stage, message)
            remove(run.folder)  # before the slot is free for the next job
            remove(self._volumes / run.job_id)
            if run.slot_lock is not None:
                run.slot_lock.close()  # releases the slot for other emulators
            with self._lock:
                del self._running[run.job_id]
                run.done.set()
                self._wake.notify_all()

    def _attempts(self, run: _Running, job: Record, mounts: list[Mount]) -> tuple[str, str | None]:
        attempts = (job.get("retry") or 0) + 1
        timeout = job.get("timeout") or DEFAULT_TIMEOUT
        argv = [*(job.get("command") or []), *(job.get("arguments") or [])]
        if not argv:
            raise JobFailure("This job has no command: the emulator cannot run a Space's own image, give a command")
        env = self._environment(job, run, mounts)
        if self.sandbox:
            self._check_command(argv[0], env["PATH"])
            layout = _sandbox.Layout(run.folder / "root", hostname=f"r-{run.job_id[:12]}")
            _sandbox.add_tools(layout, self._bin, env)
            _sandbox.add_volumes(layout, mounts)
            layout.devices = [*(f"/dev/nvidia{gpu}" for gpu in run.gpus), *(GPU_CONTROL_DEVICES if run.gpus else ())]
            command, cwd = _sandbox.command(layout, argv), None
        else:
            argv = [translate(a, mounts) for a in argv]
            command, cwd = [self._host_command(argv[0], env["PATH"]), *argv[1:]], run.folder / "work"
            cwd.mkdir(parents=True, exist_ok=True)
        stage, message = "ERROR", None
        for attempt in range(1, attempts + 1):
            if run.cancel.is_set():
                stage, message = (
                    ("ERROR", run.kill_reason) if run.kill_reason else ("CANCELED", "Cancelled by the user")
                )
                break
            suffix = f" (attempt {attempt} of {attempts})" if attempts > 1 else ""
            if self.sandbox:  # every attempt starts from a fresh container; volumes keep what was written
                if attempt > 1:
                    remove(run.folder / "root")
                _sandbox.prepare(run.folder / "root", self._bin / "python")
            self._logs.append(job["id"], f"===== Job started at {iso(self._clock.now())}{suffix} =====")
            stage, message, retryable = self._spawn(run, command, env, cwd, timeout)
            if not retryable:
                break
            if attempt < attempts:
                self._logs.append(job["id"], f"{message}; retrying ({attempt + 1} of {attempts})")
        return stage, message

    def _not_found(self, name: str) -> JobFailure:
        return JobFailure(
            f"Command not found: {name!r}. The emulator runs commands on this machine; "
            f"{', '.join(sorted(p.name for p in self._bin.iterdir()))} and programs on PATH are available"
        )

    def _host_command(self, name: str, path: str) -> str:
        exe = shutil.which(name, path=path)
        if exe is None:
            raise self._not_found(name)
        return exe

    def _check_command(self, name: str, path: str) -> None:
        """Fail clearly, before the sandbox starts, on a command that is not in its PATH."""
        if "/" in name or (self._bin / name).exists():
            return  # a path inside the sandbox (a volume's script, say): bwrap says if it is missing
        system = [p for p in path.split(":") if p != _sandbox.BIN]
        if shutil.which(name, path=os.pathsep.join(system)) is None:
            raise self._not_found(name)

    def _spawn(
        self, run: _Running, command: list[str], env: dict[str, str], cwd: Path | None, timeout: float
    ) -> tuple[str, str | None, bool]:
        """Run one attempt: (stage, message, whether another attempt may follow)."""
        assert run.slot_lock is not None
        try:
            process = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                pass_fds=(run.slot_lock.fileno(),),  # the slot stays locked while any of its processes lives
            )
        except OSError as e:
            raise JobFailure(f"Could not start {command[0]!r}: {e.strerror or e}") from None
        run.process = process
        with contextlib.suppress(psutil.Error):
            self._store.record_process(run.job_id, process.pid, psutil.Process(process.pid).create_time())
        assert process.stdout is not None and process.stderr is not None
        readers = [
            threading.Thread(target=self._pump, args=(run.job_id, pipe), daemon=True)
            for pipe in (process.stdout, process.stderr)
        ]
        for reader in readers:
            reader.start()
        if run.cancel.is_set():  # cancelled while starting: `cancel` found no process to signal
            kill_group(process, graceful=True)
        # A blocking wait returns the moment the process exits (Popen.wait with a timeout polls, up to
        # 50 ms late); the timeout, cancel and kill signal the process group from their own threads.
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            kill_group(process, graceful=True)

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            code = process.wait()
        finally:
            timer.cancel()
        # A container ends with its main process: background children it left must not linger
        # (nor hold the log pipes open). In the sandbox the kernel has ended them with its PID namespace.
        kill_group(process, graceful=False)
        for reader in readers:
            reader.join(5)  # every line is in the log before the stage changes
        run.process = None
        self._store.forget_process(run.job_id)
        if self.sandbox and code > 128 and code - 128 in signal.Signals._value2member_map_:
            code = -(code - 128)  # bwrap reports its child's death by signal as a container runtime does
        if run.cancel.is_set():  # the user cancelled, or the emulator is stopping (with a reason)
            return (
                ("ERROR", run.kill_reason, False) if run.kill_reason else ("CANCELED", "Cancelled by the user", False)
            )
        if run.kill_reason:  # a simulated node failure: another attempt may follow, as on the platform
            reason, run.kill_reason = run.kill_reason, None
            return "ERROR", reason, True
        if timed_out.is_set():
            return "ERROR", f"Job timed out after {human(timeout)} (timeoutSeconds={int(timeout)})", False
        if code == 0:
            return "COMPLETED", None, False
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            hint = " (out of memory?)" if -code == signal.SIGKILL else ""
            return "ERROR", f"Job was killed by signal {name}{hint}", True
        return "ERROR", f"Job failed with exit code {code}", True

    def _pump(self, job_id: str, pipe: IO[bytes]) -> None:
        with pipe:
            for raw in iter(pipe.readline, b""):
                self._logs.append(job_id, raw.decode("utf-8", "replace").rstrip("\r\n"))

    def _environment(self, job: Record, run: _Running, mounts: list[Mount]) -> dict[str, str]:
        """The platform's variables, the job's own and its secrets: nothing else of the host's."""
        env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
        cache = os.environ.get("UV_CACHE_DIR") or uv_cache_dir()
        if self.sandbox:
            env.update({"PATH": _sandbox.PATH, "HOME": _sandbox.HOME, "LANG": "C.UTF-8", "UV_CACHE_DIR": cache})
        else:
            home = run.folder / "home"
            home.mkdir(parents=True, exist_ok=True)
            env.update({k: os.environ[k] for k in _HOST_ONLY_ENV if k in os.environ})
            env.update(
                {
                    "PATH": os.pathsep.join([str(self._bin), env.get("PATH", os.defpath)]),
                    "HOME": str(home),
                    "HF_HOME": str(home / ".cache" / "huggingface"),
                    "UV_CACHE_DIR": cache,
                }
            )
        env.update(
            {
                "HF_ENDPOINT": self._endpoint(),
                "HF_HUB_DISABLE_TELEMETRY": "1",
                "JOB_ID": job["id"],
                **flavor_env(job.get("flavor") or ""),
            }
        )
        if run.gpus or self.gpus:  # with a pool, a CPU job sees no GPU at all
            env["CUDA_VISIBLE_DEVICES"] = ",".join(run.gpus)
        own = job.get("environment") or {}
        env.update(own if self.sandbox else {k: translate(v, mounts) for k, v in own.items()})
        env.update(self._store.job_secrets(job["id"]))
        return env

    # -- volumes -----------------------------------------------------------------------------------
    def bucket_changed(self, bucket: str, paths: list[str]) -> None:
        """Files written to a bucket appear in the read-only volumes of the running jobs, as a mounted
        bucket follows its changes (a run's lease, renewed by its client, is read this way)."""
        if self._views is not None:
            self._views.refresh_in_use(bucket, paths)
        with self._lock:
            copies = [m for run in self._running.values() for m in run.mounts if m.view is None and m.source == bucket]
        for mount in copies:  # host processes: their read-only copies are rewritten
            update_copy(mount, paths, self._store, self._storage)

    def _sync_back(self, mounts: list[Mount]) -> None:
        for mount in mounts:
            if mount.bucket is None:
                continue
            add, delete = changes(mount)
            if add or delete:
                self._publish(mount.bucket, add, delete)

    # -- metrics -----------------------------------------------------------------------------------
    def _sample(self) -> None:
        total_memory = psutil.virtual_memory().total
        while not self._stopping:
            for run in list(self._running.values()):
                if run.process is None:
                    continue
                with contextlib.suppress(psutil.Error):
                    run.sample = measure(run.process.pid, run.ps, run.memory_total or total_memory, run.job_id)
            for _ in range(20):  # one sample a second, but notice `stop()` at once
                if self._stopping:
                    break
                time.sleep(0.05)

    # -- helpers -----------------------------------------------------------------------------------
    @staticmethod
    def _make_bin(path: Path) -> Path:
        """`uv` and `python` as a job image has them: uv from the uv package, python the base interpreter."""
        from uv import find_uv_bin

        path.mkdir(parents=True, exist_ok=True)
        python = getattr(sys, "_base_executable", sys.executable) or sys.executable
        for name, target in (("uv", find_uv_bin()), ("python", python), ("python3", python)):
            link = path / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target)
        return path
