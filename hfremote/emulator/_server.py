"""The emulator as an object: state directory, services, and a uvicorn server in a background thread."""

from __future__ import annotations

import collections
import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import uvicorn

from . import _sandbox
from ._app import build_app
from ._faults import FaultRule, Faults
from ._hardware import detect_gpus
from ._jobs import Jobs
from ._logs import LogBook
from ._runtime import Runtime
from ._scheduler import Schedules
from ._store import Store, private_file
from ._users import Users, parse_org
from ._util import Clock, iso
from ._xet import INTERNAL_HEADER, XetStorage, upload

DEFAULT_USER = "emulator-user"


class Context:
    """Everything a route handler needs, shared by the app and the `Emulator` front."""

    def __init__(
        self,
        state_dir: Path,
        users: Users,
        max_running: int,
        page_size: int,
        seed: int | None,
        sandbox: bool = False,
        gpus: list[str] | None = None,
    ) -> None:
        self.state_dir, self.users = state_dir, users
        # The default user: the embedded emulator's one, and what single-user callers know as "the" user.
        self.user = users.default
        self.token = users.token(self.user)
        self.page_size = page_size
        self.store = Store(state_dir / "emulator.sqlite3")
        self.instance = self.store.meta("instance") or secrets.token_hex(6)
        self.store.set_meta("instance", self.instance)
        self.clock = Clock(float(self.store.meta("clock_offset", "0") or 0))
        self.storage = XetStorage(state_dir / "xet", self.store)
        self.storage.ingest = self.ingest
        self.logs = LogBook(state_dir / "logs", self.clock)
        self.endpoint = ""
        self.runtime = Runtime(
            self.store,
            self.storage,
            self.logs,
            state_dir,
            self.clock,
            max_running,
            lambda: self.endpoint,
            self.publish,
            sandbox=sandbox,
            gpus=gpus,
        )
        self.jobs = Jobs(self.store, self.runtime, self.clock, users)
        self.jobs.endpoint = lambda: self.endpoint
        self.schedules = Schedules(self.jobs)
        self.faults = Faults(seed)
        self.runtime.on_job_started = self._maybe_kill
        self.closing = False
        self._requests: collections.Counter[tuple[str, str, int]] = collections.Counter()
        self.request_log: collections.deque[tuple[float, str, str, int]] = collections.deque(maxlen=200_000)

    # -- auth ------------------------------------------------------------------------------------
    def xet_token(self, kind: str) -> str:
        """A CAS token ("read" or "write"), derived, not random: valid across a restart on the same state.

        Readers (anyone, for a public bucket) get the read token, which the CAS refuses for uploads.
        """
        secret = f"{self.token}:{self.instance}:{kind}".encode()
        return f"xet_{kind[0]}_" + hashlib.sha256(secret).hexdigest()[:40]

    def internal_headers(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """Whether a request is the emulator's own (see `_xet.upload`)."""
        name = INTERNAL_HEADER.encode()
        values = [v for k, v in headers if k == name]  # only those requests pay for the token
        return bool(values) and secrets.compare_digest(values[0], self.xet_token("write").encode())

    def ingest(self, paths: list[Path]) -> list[tuple[str, int]]:
        """Upload local files into our CAS through our own routes, as a client's upload would."""
        return upload(f"{self.endpoint}/cas/{self.instance}", self.xet_token("write"), paths)

    def publish(self, bucket_id: str, add: list[tuple[Path, str]], delete: list[str]) -> None:
        """Store local files into a bucket (job volumes syncing back)."""
        now = iso(self.clock.now())
        for local, path in add:
            xet_hash, size = self.storage.put_whole(local)
            self.store.put_file(bucket_id, path, xet_hash, size, int(local.stat().st_mtime * 1000), now, None)
        for path in delete:
            self.store.delete_file(bucket_id, path)

    # -- request log -----------------------------------------------------------------------------
    def record(self, method: str, path: str, status: int) -> None:
        self.request_log.append((time.time(), method, path, status))

    def request_counts(self) -> dict[str, int]:
        counts: collections.Counter[str] = collections.Counter()
        for _, method, path, status in self.request_log:
            counts[f"{method} {path} {status}"] += 1
        return dict(counts)

    # -- time and faults -------------------------------------------------------------------------
    def advance(self, seconds: float) -> list[str]:
        return [job["id"] for job in self.schedules.advance(seconds)]

    def _maybe_kill(self, job_id: str) -> None:
        rule = self.faults.match("KILL", job_id, ("kill",))
        if rule is not None:
            reason = "Job was killed (injected fault: simulated node failure)"
            timer = threading.Timer(rule.delay, self._kill_when_running, args=(job_id, reason))
            timer.daemon = True
            timer.start()

    def _kill_when_running(self, job_id: str, reason: str) -> None:
        deadline = time.monotonic() + 30  # the process may still be starting (volumes, uv)
        while not self.runtime.kill(job_id, reason) and time.monotonic() < deadline:
            job = self.store.job(job_id)
            if job is None or job["status"]["stage"] not in ("SCHEDULING", "RUNNING"):
                return
            time.sleep(0.05)


class Emulator:
    """An offline Hugging Face Jobs platform on loopback.

        with Emulator() as emu:
            api = HfApi(endpoint=emu.endpoint, token=emu.token)

    `state_dir` keeps jobs, schedules and bucket files across restarts (a temporary directory, removed
    on exit, when not given), readable by its owner only. Running jobs are ended when the emulator stops.
    `user`/`token` are the default user; `users` adds others as (name, token) pairs; `orgs` are "ORG"
    (the default user is its member) or "ORG:MEMBER,MEMBER".

    `sandbox`: "auto" (the default, or $HFREMOTE_EMULATOR_SANDBOX) runs jobs in a bubblewrap sandbox
    where it can, "on" insists (SandboxUnavailable otherwise), "off" runs them as host processes.
    `gpus`: the GPU pool that GPU flavors take their GPUs from: ids ("0", "1", ...) or a count; by
    default the host's NVIDIA GPUs. A count or ids with no such devices simulate a pool (for tests).
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        token: str | None = None,
        user: str = DEFAULT_USER,
        users: tuple[tuple[str, str], ...] = (),
        orgs: tuple[str, ...] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        max_running: int | None = None,
        page_size: int = 1000,
        faults: list[str | FaultRule] | None = None,
        seed: int | None = None,
        sandbox: str | None = None,
        gpus: int | list[str] | None = None,
    ) -> None:
        self.sandboxed, notice = _sandbox.resolve(_sandbox.mode_from(sandbox))
        if notice:
            logging.getLogger("hfremote.emulator").warning(notice)
        pool = detect_gpus() if gpus is None else [str(i) for i in range(gpus)] if isinstance(gpus, int) else gpus
        self._temp = state_dir is None
        self.state_dir = Path(tempfile.mkdtemp(prefix="hfremote-emulator-") if state_dir is None else state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.state_dir.chmod(0o700)  # records, logs and stored files are the owner's alone
        self.token = token or self._saved_token()
        self.user = user
        self.host, self.port = host, port
        members = dict(parse_org(org) for org in orgs)
        self.ctx = Context(
            self.state_dir.resolve(),
            Users(((user, self.token), *users), members),
            max_running or os.cpu_count() or 2,
            page_size,
            seed,
            sandbox=self.sandboxed,
            gpus=[str(g) for g in pool],
        )
        for rule in faults or ():
            self.ctx.faults.add(rule)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._state_lock: IO[bytes] | None = None

    def _saved_token(self) -> str:
        path = self.state_dir / "token"
        if path.exists():
            return path.read_text().strip()
        token = "hf_emulator_" + secrets.token_hex(16)
        private_file(path)
        path.write_text(token)
        return token

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Emulator:
        try:
            return self._start()
        except BaseException:
            # A port already taken (or a server that would not start) leaves nothing behind: no open
            # database, socket, thread or temporary directory.
            self._release()
            raise

    def _lock_state(self) -> None:
        """One emulator per state directory: a second one would take the first one's running jobs for
        leftovers of a dead emulator and end them."""
        lock = (self.state_dir / "emulator.lock").open("ab")  # (not inherited by job processes: PEP 446)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise RuntimeError(
                f"the state directory {self.state_dir} is in use by another emulator: stop that one first, "
                "or give this one another --state-dir"
            ) from None
        self._state_lock = lock

    def _start(self) -> Emulator:
        self._lock_state()
        # proto=IPPROTO_TCP: asyncio only sets TCP_NODELAY on sockets that say so, and without it every
        # keep-alive request waits ~40 ms on Nagle + delayed ACK.
        sock = socket.socket(
            socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
        )
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except BaseException:
            sock.close()
            raise
        self._socket = sock
        self.port = sock.getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.ctx.endpoint = f"http://{host}:{self.port}"
        config = uvicorn.Config(
            build_app(self.ctx),
            log_level="warning",
            date_header=False,
            server_header=False,
            timeout_graceful_shutdown=3,
            lifespan="off",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="emulator-http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the emulator failed to start on {self.endpoint}")
            time.sleep(0.01)
        self.ctx.runtime.start()
        self.ctx.schedules.start()
        logging.getLogger("hfremote.emulator").info("emulator serving on %s", self.endpoint)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self.ctx.closing = True
        self.ctx.schedules.stop()
        self.ctx.runtime.stop()
        self._release()

    def _release(self) -> None:
        """Stop the server thread and free the socket, the database and a temporary state directory."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        started = self._server is not None and self._server.started
        if self._socket is not None and not started:
            self._socket.close()  # a server that ran closes it itself (closing it here too races its shutdown)
        self._socket = None
        self.ctx.store.close()
        if self._state_lock is not None:
            self._state_lock.close()  # the next emulator may use the state directory now
            self._state_lock = None
        self._server = None
        if self._temp:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def serve_forever(self) -> None:
        """Block until interrupted (the `hfremote emulator` command); starts the server unless started."""
        if self._server is None:
            self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- for tests and tools ---------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return self.ctx.endpoint

    @property
    def faults(self) -> Faults:
        return self.ctx.faults

    def advance(self, seconds: float) -> list[str]:
        """Move the emulator clock forward and fire the schedules now due; returns the new job ids."""
        return self.ctx.advance(seconds)

    def fire_schedules(self) -> list[str]:
        return [job["id"] for job in self.ctx.schedules.fire_due()]

    def kill_job(self, job_id: str, reason: str = "Job was killed (simulated node failure)") -> bool:
        return self.ctx.runtime.kill(job_id, reason)

    def requests(self) -> list[tuple[float, str, str, int]]:
        """Every request served so far: (time, method, path, status)."""
        return list(self.ctx.request_log)

    def jobs(self, **filters: Any) -> list[dict[str, Any]]:
        """Job records straight from the store (newest first), e.g. `jobs(stages=["RUNNING"])`."""
        return self.ctx.store.jobs(**filters)
