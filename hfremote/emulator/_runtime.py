"""Running jobs as local processes, the way the platform runs containers.

    create ──► SCHEDULING ──(a slot frees up)──► RUNNING ──► COMPLETED | ERROR | CANCELED
                                   │ materialise volumes, translate mount paths in argv and env
                                   │ spawn the command in its own process group; stdout/stderr → log lines
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
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from ._hardware import memory_bytes
from ._logs import LogBook
from ._proxy import exposed_ports
from ._store import Record, Store
from ._util import Clock, iso
from ._xet import XetStorage

TERMINAL = ("COMPLETED", "CANCELED", "ERROR", "DELETED")
DEFAULT_TIMEOUT = 30 * 60  # the platform's default when a job sets none
_KILL_GRACE = 1.0
_PORT_LOOKAHEAD = 100  # waiting jobs looked at past the free slots, when some wait for a port
_PASSTHROUGH_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "TMPDIR",
    "SYSTEMROOT",
)


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
    mounts: list[_Mount] = field(default_factory=list)
    memory_total: int | None = None  # the flavor's memory, reported by the metrics


@dataclass
class _Mount:
    mount_path: str
    local: Path
    bucket: str | None = None  # set for read-write bucket volumes, which are synced back
    prefix: str = ""
    snapshot: dict[str, tuple[int, int]] = field(default_factory=dict)
    source: str | None = None  # set for read-only bucket volumes, which follow the bucket's changes


class JobFailure(Exception):
    """A job that cannot start (bad volume, unknown command): becomes ERROR with this message."""


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
    ) -> None:
        self._store, self._storage, self._logs, self._clock = store, storage, logs, clock
        self._root = root
        self._slots = _slots_root(root)
        self._endpoint = endpoint  # the emulator's own address: jobs reach "the Hub" there
        self._publish = publish  # stores files into a bucket, as an upload through Xet would
        self.max_running = max_running
        self._lock = self.lock = threading.RLock()  # guards job records and the running set
        self._wake = threading.Condition(self._lock)
        self._running: dict[str, _Running] = {}
        self._stopping = False
        self.on_job_started: Callable[[str], None] | None = None  # fault injection hooks in here
        self._bin = self._make_bin(root / "bin")
        self._dispatcher = threading.Thread(target=self._dispatch, name="emulator-dispatch", daemon=True)
        self._sampler = threading.Thread(target=self._sample, name="emulator-metrics", daemon=True)

    def start(self) -> None:
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
                _kill_group(process, graceful=False)
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
            _kill_group(process, graceful=True)
        run.done.wait(wait)

    def kill(self, job_id: str, reason: str) -> bool:
        """Kill a running job's processes as a node failure would: the job ends as ERROR."""
        with self._lock:
            run = self._running.get(job_id)
        process = None if run is None else run.process  # read once: `_spawn` clears it when the process ends
        if run is None or process is None:
            return False
        run.kill_reason = reason
        _kill_group(process, graceful=False)
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
                free = self.max_running - len(self._running)
                waiting = self._startable(free) if free > 0 else []
                if not waiting:
                    self._wake.wait(1.0)
                    continue
                for job in waiting:
                    folder, slot_lock = self._free_slot()
                    run = self._running[job["id"]] = _Running(
                        job["id"], folder, slot_lock=slot_lock, memory_total=memory_bytes(job.get("flavor", ""))
                    )
                    self._update(job["id"], stage="RUNNING", message=None, startedAt=iso(self._clock.now()))
                    threading.Thread(target=self._run, args=(run,), name=f"job-{job['id']}", daemon=True).start()

    def _startable(self, free: int) -> list[Record]:
        """The oldest waiting jobs that may start now, at most `free` of them.

        Jobs share the host's network, so an exposed port is held by the running job that exposes it:
        a job exposing a port that is held waits (in SCHEDULING, in order) until that job ends.
        """
        waiting = self._store.jobs(stages=["SCHEDULING"], newest_first=False, limit=free + _PORT_LOOKAHEAD)
        if not any(exposed_ports(job) for job in waiting):
            return waiting[:free]
        held = self.held_ports()
        chosen = []
        for job in waiting:
            ports = exposed_ports(job)
            if ports & held:
                continue
            held |= ports
            chosen.append(job)
            if len(chosen) == free:
                break
        return chosen

    def held_ports(self, except_job: str | None = None) -> set[int]:
        """The ports the running jobs expose."""
        held: set[int] = set()
        for job in self._store.jobs(stages=["RUNNING"]):
            if job["id"] != except_job:
                held |= exposed_ports(job)
        return held

    def _free_slot(self) -> tuple[Path, IO[bytes]]:
        """A folder for the next job, and the lock that keeps it this job's while it runs.

        uv keys a script's cached environment on the script's path: jobs that run in the same slot
        reuse it (as long as their requirements match) instead of filling uv's cache with one
        environment per job. Slots live in the user's cache, shared by every emulator on the machine
        (a file lock each), so a new emulator (a test, a script run with no token) finds them warm:
        no environment to build and no package index to ask.
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
            _remove(folder)  # what a job of an emulator that died left
            return folder, lock
        raise AssertionError("unreachable")

    def _run(self, run: _Running) -> None:
        job = self._store.job(run.job_id)
        assert job is not None
        stage: str = "ERROR"
        message: str | None = "The emulator failed to run this job"
        mounts: list[_Mount] = []
        try:
            mounts = run.mounts = self._mount(job, run.folder)
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
                self._sync_back(run.job_id, mounts)
            except Exception as e:
                if stage == "COMPLETED":
                    stage, message = "ERROR", f"Could not save the job's files to the bucket: {e}"
            self._finish(job, stage, message)
            _remove(run.folder)  # before the slot is free for the next job
            if run.slot_lock is not None:
                run.slot_lock.close()  # releases the slot for other emulators
            with self._lock:
                del self._running[run.job_id]
                run.done.set()
                self._wake.notify_all()

    def _attempts(self, run: _Running, job: Record, mounts: list[_Mount]) -> tuple[str, str | None]:
        attempts = (job.get("retry") or 0) + 1
        timeout = job.get("timeout") or DEFAULT_TIMEOUT
        argv = [_translate(a, mounts) for a in [*(job.get("command") or []), *(job.get("arguments") or [])]]
        env = self._environment(job, mounts, run.folder / "home")
        workdir = run.folder / "work"
        workdir.mkdir(parents=True, exist_ok=True)
        stage, message = "ERROR", None
        for attempt in range(1, attempts + 1):
            if run.cancel.is_set():
                stage, message = (
                    ("ERROR", run.kill_reason) if run.kill_reason else ("CANCELED", "Cancelled by the user")
                )
                break
            suffix = f" (attempt {attempt} of {attempts})" if attempts > 1 else ""
            self._logs.append(job["id"], f"===== Job started at {iso(self._clock.now())}{suffix} =====")
            stage, message, retryable = self._spawn(run, argv, env, workdir, timeout)
            if not retryable:
                break
            if attempt < attempts:
                self._logs.append(job["id"], f"{message}; retrying ({attempt + 1} of {attempts})")
        return stage, message

    def _spawn(
        self, run: _Running, argv: list[str], env: dict[str, str], workdir: Path, timeout: float
    ) -> tuple[str, str | None, bool]:
        """Run one attempt: (stage, message, whether another attempt may follow)."""
        if not argv:
            raise JobFailure("This job has no command: the emulator cannot run a Space's own image, give a command")
        exe = shutil.which(argv[0], path=env["PATH"])
        if exe is None:
            raise JobFailure(
                f"Command not found: {argv[0]!r}. The emulator runs commands on this machine; "
                f"{', '.join(sorted(p.name for p in self._bin.iterdir()))} and programs on PATH are available"
            )
        try:
            process = subprocess.Popen(
                [exe, *argv[1:]],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            raise JobFailure(f"Could not start {argv[0]!r}: {e.strerror or e}") from None
        run.process = process
        assert process.stdout is not None and process.stderr is not None
        readers = [
            threading.Thread(target=self._pump, args=(run.job_id, pipe), daemon=True)
            for pipe in (process.stdout, process.stderr)
        ]
        for reader in readers:
            reader.start()
        if run.cancel.is_set():  # cancelled while starting: `cancel` found no process to signal
            _kill_group(process, graceful=True)
        # A blocking wait returns the moment the process exits (Popen.wait with a timeout polls, up to
        # 50 ms late); the timeout, cancel and kill signal the process group from their own threads.
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            _kill_group(process, graceful=True)

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            code = process.wait()
        finally:
            timer.cancel()
        # A container ends with its main process: background children it left must not linger
        # (nor hold the log pipes open).
        _kill_group(process, graceful=False)
        for reader in readers:
            reader.join(5)  # every line is in the log before the stage changes
        run.process = None
        if run.cancel.is_set():  # the user cancelled, or the emulator is stopping (with a reason)
            return (
                ("ERROR", run.kill_reason, False) if run.kill_reason else ("CANCELED", "Cancelled by the user", False)
            )
        if run.kill_reason:  # a simulated node failure: another attempt may follow, as on the platform
            reason, run.kill_reason = run.kill_reason, None
            return "ERROR", reason, True
        if timed_out.is_set():
            return "ERROR", f"Job timed out after {_human(timeout)} (timeoutSeconds={int(timeout)})", False
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

    def _environment(self, job: Record, mounts: list[_Mount], home: Path) -> dict[str, str]:
        # Built from scratch: the caller's tokens and settings must never leak into a job.
        home.mkdir(parents=True, exist_ok=True)
        env = {k: os.environ[k] for k in _PASSTHROUGH_ENV if k in os.environ}
        env.update({k: v for k, v in os.environ.items() if k.startswith("UV_") and k != "UV_PROJECT_ENVIRONMENT"})
        endpoint = self._endpoint()
        env.update(
            {
                "PATH": os.pathsep.join([str(self._bin), env.get("PATH", os.defpath)]),
                "HOME": str(home),
                "HF_HOME": str(home / ".cache" / "huggingface"),
                "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR") or _uv_cache_dir(),
                "HF_ENDPOINT": endpoint,
                "HF_HUB_DISABLE_TELEMETRY": "1",
                "JOB_ID": job["id"],
                "ACCELERATOR": "",
                "CPU_CORES": str(os.cpu_count() or 1),
            }
        )
        env.update({k: _translate(v, mounts) for k, v in (job.get("environment") or {}).items()})
        env.update(self._store.job_secrets(job["id"]))
        return env

    # -- volumes -----------------------------------------------------------------------------------
    def _mount(self, job: Record, folder: Path) -> list[_Mount]:
        mounts = []
        base = folder / "mounts"
        for i, volume in enumerate(job.get("volumes") or []):
            local = base / str(i)
            if volume.get("type") == "bucket":
                mounts.append(self._mount_bucket(volume, local))
            else:
                mounts.append(_Mount(volume["mountPath"], _repo_snapshot(volume)))
        return sorted(mounts, key=lambda m: -len(m.mount_path))

    def _mount_bucket(self, volume: dict[str, Any], local: Path) -> _Mount:
        bucket = volume["source"]
        if self._store.bucket(bucket) is None:
            raise JobFailure(f"Bucket {bucket!r} of the volume at {volume['mountPath']} does not exist")
        prefix = f"{volume['path'].strip('/')}/" if volume.get("path") else ""
        local.mkdir(parents=True, exist_ok=True)
        for f in self._store.files(bucket, prefix):
            dest = local / f["path"][len(prefix) :]
            dest.parent.mkdir(parents=True, exist_ok=True)
            with dest.open("wb") as out:
                self._storage.write_file(f["xetHash"], out)
        read_only = bool(volume.get("readOnly"))
        mount = _Mount(
            volume["mountPath"], local, None if read_only else bucket, prefix, source=bucket if read_only else None
        )
        mount.snapshot = _scan(local)
        if read_only:
            for path in local.rglob("*"):
                path.chmod(0o555 if path.is_dir() else 0o444)
            local.chmod(0o555)
        return mount

    def bucket_changed(self, bucket: str, paths: list[str]) -> None:
        """Files written to a bucket appear in the read-only mounts of the running jobs, as a mounted
        bucket follows its changes (a run's lease, renewed by its client, is read this way)."""
        with self._lock:
            mounts = [m for run in self._running.values() for m in run.mounts if m.source == bucket]
        for mount in mounts:
            for path in paths:
                if not path.startswith(mount.prefix):
                    continue
                record = self._store.file(bucket, path)
                dest = mount.local / path[len(mount.prefix) :]
                if record is None or not dest.parent.is_dir():
                    continue
                part = dest.parent / f".{dest.name}.{os.getpid()}.part"
                try:
                    dest.parent.chmod(0o755)
                    with part.open("wb") as out:
                        self._storage.write_file(record["xetHash"], out)
                    part.chmod(0o444)
                    os.replace(part, dest)  # a reader sees the old file or the new one, never half of it
                except OSError:
                    pass  # the job ended meanwhile: its folder is gone
                finally:
                    with contextlib.suppress(OSError):
                        dest.parent.chmod(0o555)

    def _sync_back(self, job_id: str, mounts: list[_Mount]) -> None:
        for mount in mounts:
            if mount.bucket is None:
                continue
            now = _scan(mount.local)
            add = [
                (mount.local / rel, mount.prefix + rel) for rel, sig in now.items() if mount.snapshot.get(rel) != sig
            ]
            delete = [mount.prefix + rel for rel in mount.snapshot if rel not in now]
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
                    run.sample = self._measure(run, total_memory)
            for _ in range(20):  # one sample a second, but notice `stop()` at once
                if self._stopping:
                    break
                time.sleep(0.05)

    @staticmethod
    def _measure(run: _Running, total_memory: int) -> dict[str, Any]:
        assert run.process is not None
        root = psutil.Process(run.process.pid)
        cpu = rss = 0.0
        seen = {}
        for proc in [root, *root.children(recursive=True)]:
            known = run.ps.get(proc.pid, proc)  # keep the object: cpu_percent measures since its last call
            seen[proc.pid] = known
            with contextlib.suppress(psutil.Error):
                cpu += known.cpu_percent(None)
                rss += known.memory_info().rss
        run.ps = seen
        cores = os.cpu_count() or 1
        return {
            "cpu_usage_pct": round(cpu / cores, 1),
            "cpu_millicores": int(cpu * 10),
            "memory_used_bytes": int(rss),
            "memory_total_bytes": run.memory_total or total_memory,  # the flavor's memory, as on the Hub
            "rx_bps": 0,
            "tx_bps": 0,
            "gpus": {},
            "replica": run.job_id[-5:],
        }

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


def _slots_root(state: Path) -> Path:
    """The user's cache (shared slots), or the emulator's state directory where that cannot be written."""
    try:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        shared = Path(cache) / "hfremote" / "emulator-slots"
        shared.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=shared):
            return shared
    except (OSError, RuntimeError):  # no writable cache, or no home directory
        own = state / "slots"
        own.mkdir(parents=True, exist_ok=True)
        return own


def _kill_group(process: subprocess.Popen[bytes], graceful: bool) -> None:
    """Signal the whole process group: `uv run` starts python as a child, and both must go."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if graceful:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(_KILL_GRACE)
                # the leader is gone; make sure nothing it started lingers
                os.killpg(process.pid, signal.SIGKILL)
                return
            except subprocess.TimeoutExpired:
                pass
        os.killpg(process.pid, signal.SIGKILL)


def _remove(folder: Path) -> None:
    """Delete a job's folder, read-only volume copies included."""
    for path in folder.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                path.chmod(0o755)
    shutil.rmtree(folder, ignore_errors=True)


def _scan(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            st = path.stat()
            out[path.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def _translate(text: str, mounts: list[_Mount]) -> str:
    """Rewrite a container mount path (e.g. `/data/x.py`, `--out=/data`) to its local directory."""
    for mount in mounts:  # longest mount path first
        pattern = r"(?<![\w./-])" + re.escape(mount.mount_path.rstrip("/")) + r"(?=/|$|[\s:,;'\"])"
        text = re.sub(pattern, str(mount.local).replace("\\", "\\\\"), text)  # a replacement template
    return text


def _repo_snapshot(volume: dict[str, Any]) -> Path:
    """A model/dataset/space volume, served from the local Hugging Face cache when it is there."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(
            snapshot_download(
                volume["source"],
                repo_type=volume.get("type", "model"),
                revision=volume.get("revision"),
                local_files_only=True,
            )
        )
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise JobFailure(
            f"The emulator is offline and has no local copy of {volume.get('type', 'model')} {volume['source']!r} "
            f"for the volume at {volume['mountPath']}: download it once with `hf download` to mount it"
        ) from None


_UV_CACHE: list[str] = []


def _uv_cache_dir() -> str:
    if not _UV_CACHE:
        from uv import find_uv_bin

        out = subprocess.run([find_uv_bin(), "cache", "dir"], capture_output=True, text=True, check=False)
        _UV_CACHE.append(out.stdout.strip() or str(Path.home() / ".cache" / "uv"))
    return _UV_CACHE[0]


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
