"""One run: its id, its folder in the bucket, what it uploads and the jobs it creates.

A run is everything one call, one map or one deployed schedule ships: the function packed once, the
entry script, and one folder per chunk of inputs. Its folder in the `{namespace}/hfremote` bucket:

    runs/<run id>/shared/entry.py  manifest.json  function.pkl  lease
                  chunks/<chunk>/inputs.pkl  results.pkl

A job mounts `shared/` read-only at `/hfremote/run` and only its own chunk's folder read-write at
`/hfremote/chunk`, so what a job mounts never grows with the run. A chunk is named after the inputs it
holds, `<first index>-<count>` (and `-r<round>` for a retry), so the run's file listing alone tells
which inputs were uploaded and which have results: that is what attaching and resuming a run read.
A scheduled function's folder is `schedules/<name>/<spec hash>/`, and each of its runs writes
`results-<job id>.pkl` in its one chunk.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cloudpickle
from huggingface_hub import JobInfo, Volume

from ._calls import PackedCall, Packer, describe, short_name, write_chunk
from ._hub import Hub
from ._options import RUN_MOUNT, Options, resolve_secrets, sanitize
from ._packing import Scan, pack_function, pinned_dependencies, render_entry

RUN_LABEL, CALL_LABEL, FUNCTION_LABEL = "hfremote-run", "hfremote-call", "hfremote-function"
SHARED_MOUNT, CHUNK_MOUNT = f"{RUN_MOUNT}/run", f"{RUN_MOUNT}/chunk"
LEASE_FILE = "lease"
_CHUNK_RE = re.compile(r"^(\d+)-(\d+)(?:-r(\d+))?$")


def new_run_id() -> str:
    """Sortable and unique: a UTC timestamp and 6 random hex digits (label-safe)."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{os.urandom(3).hex()}"


def chunk_name(first: int, count: int, retry: int = 0) -> str:
    """The name of a chunk of `count` consecutive inputs from `first` (label-safe)."""
    return f"{first}-{count}" + (f"-r{retry}" if retry else "")


def chunk_indexes(name: str) -> range | None:
    """The inputs a chunk holds, from its name (None for a name hfremote did not make)."""
    m = _CHUNK_RE.match(name)
    return range(int(m.group(1)), int(m.group(1)) + int(m.group(2))) if m else None


def chunk_round(name: str) -> int:
    m = _CHUNK_RE.match(name)
    return int(m.group(3) or 0) if m else 0


@dataclass(frozen=True)
class Layout:
    """Where a run's files are in the bucket."""

    folder: str  # runs/<run id>, or schedules/<name>/<spec hash>

    @property
    def shared(self) -> str:
        return f"{self.folder}/shared"

    @property
    def lease(self) -> str:
        return f"{self.shared}/{LEASE_FILE}"

    def chunk(self, chunk: str) -> str:
        return f"{self.folder}/chunks/{chunk}"

    def inputs(self, chunk: str) -> str:
        return f"{self.chunk(chunk)}/inputs.pkl"

    def results(self, chunk: str, job_id: str | None = None) -> str:
        """A chunk's result file; each run of a scheduled function writes its own, named after its job."""
        each_run = job_id is not None and self.folder.startswith("schedules/")
        return f"{self.chunk(chunk)}/results" + (f"-{job_id}" if each_run else "") + ".pkl"

    @classmethod
    def of_run(cls, run_id: str) -> Layout:
        return cls(f"runs/{run_id}")

    @classmethod
    def of_job(cls, info: JobInfo) -> Layout | None:
        """The layout of the run a job belongs to, from the folder mounted as its chunk."""
        for volume in info.volumes or []:
            if volume.mount_path == CHUNK_MOUNT and volume.path and "/chunks/" in volume.path:
                return cls(volume.path.rsplit("/chunks/", 1)[0])
        return None


def lease_record(ttl: float, detached: bool) -> bytes:
    """The lease file: renewed by the client while it lives; a job ends when it stops changing for `ttl`."""
    return json.dumps({"renewed": time.time(), "ttl": ttl, "detached": detached}).encode()


def lease_ttl(data: bytes | None) -> float | None:
    """The ttl of a lease that is in force, or None (no lease, a detached run's, or not a lease)."""
    try:
        lease = json.loads(data) if data is not None else None
        if not isinstance(lease, dict) or lease.get("detached"):
            return None
        ttl = float(lease["ttl"])
    except (ValueError, KeyError, TypeError):
        return None
    return ttl if ttl > 0 else None


class Run:
    """Everything checked and packed for a run, ready to upload: the part shared by all its calls."""

    def __init__(
        self,
        hub: Hub,
        fn: Callable[..., Any],
        options: Options,
        run_id: str | None = None,
        lease_ttl: float | None = None,
        packer: Packer | None = None,
    ) -> None:
        self.hub, self.fn, self.options = hub, fn, options
        # Local checks first, then those that ask the platform: bad input costs no request.
        self.secrets = resolve_secrets(options, hub.token)
        scan = Scan(fn, options.ship, options.pin)
        self.packer = packer or Packer(fn, scan.rules)  # packs the inputs; notes what their objects need
        self.function = pack_function(fn, scan)
        self.code_files = scan.code_files
        explicit = list(options.dependencies)
        self.dependencies = pinned_dependencies(scan, explicit) if options.detect_dependencies else explicit
        self.run_id = run_id or new_run_id()
        self.layout = Layout.of_run(self.run_id)
        self.name = sanitize(str(options.name or short_name(fn)))
        self.namespace = hub.namespace(options.namespace)
        self.lease_ttl = lease_ttl  # None: no lease (detached runs, scheduled functions)
        hub.check_flavor(options.flavor)
        self._uploaded = False
        self._upload_lock = threading.Lock()  # calls may be added from several threads (an Executor)
        self._entry: str | None = None

    @property
    def entry(self) -> str:
        """The entry script, made when first needed: the first inputs' objects name distributions too."""
        if self._entry is None:
            if self.options.detect_dependencies:
                self.dependencies = self.packer.dependencies(self.dependencies)
            self._entry = render_entry(self.options.python, self.dependencies)
        return self._entry

    @property
    def bucket(self) -> str:
        return self.hub.bucket(self.namespace)

    def shared_files(self) -> list[tuple[str | Path | bytes, str]]:
        manifest = {
            "python": self.options.python,
            "cloudpickle": cloudpickle.__version__,
            "function": describe(self.fn),
            "dependencies": self.dependencies,
            "created": datetime.now(timezone.utc).isoformat(),
        }
        files: list[tuple[str | Path | bytes, str]] = [
            (self.entry.encode(), f"{self.layout.shared}/entry.py"),
            (json.dumps(manifest, indent=1).encode(), f"{self.layout.shared}/manifest.json"),
            (self.function, f"{self.layout.shared}/function.pkl"),
        ]
        if self.layout.folder.startswith("runs/"):  # a detached run's says so: attaching it must not renew it
            files.append(self._lease())
        return files

    def _lease(self) -> tuple[str | Path | bytes, str]:
        return lease_record(self.lease_ttl or 0.0, self.lease_ttl is None), self.layout.lease

    def write_lease(self) -> None:
        """Write this run's lease now (a process taking over a run it resumes)."""
        self.hub.upload(self.bucket, [self._lease()])

    def upload(self, chunks: dict[str, list[tuple[int, PackedCall]]]) -> None:
        """Upload chunks of inputs in one batch (with the shared files, the first time)."""
        with tempfile.TemporaryDirectory(prefix="hfremote-upload-") as tmp:
            files: list[tuple[str | Path | bytes, str]] = []
            for chunk, calls in chunks.items():  # each call's bytes copied from where it was pickled, once
                path = Path(tmp) / f"{chunk}.pkl"
                with open(path, "wb") as out:
                    write_chunk(calls, out)
                files.append((path, self.layout.inputs(chunk)))
            if not self._uploaded:
                with self._upload_lock:  # the shared files once, before any job that reads them is created
                    if not self._uploaded:
                        self.hub.upload(self.bucket, [*self.shared_files(), *files])
                        self._uploaded = True
                        return
            self.hub.upload(self.bucket, files)

    def labels(self, chunk: str) -> dict[str, str]:
        return {
            **self.options.labels,
            RUN_LABEL: self.run_id,
            CALL_LABEL: chunk,
            FUNCTION_LABEL: sanitize(describe(self.fn)),
            "name": self.name,
        }

    def spec(self, chunk: str, each_run: bool = False) -> dict[str, Any]:
        """The job spec (as `run_job` takes it): the shared files read-only, the chunk's folder read-write."""
        o = self.options
        volumes = [
            Volume(type="bucket", source=self.bucket, mount_path=SHARED_MOUNT, read_only=True, path=self.layout.shared),
            Volume(
                type="bucket",
                source=self.bucket,
                mount_path=CHUNK_MOUNT,
                read_only=False,
                path=self.layout.chunk(chunk),
            ),
            *(
                Volume(
                    type=v.type,
                    source=v.source,
                    mount_path=v.mount_path,
                    read_only=v.read_only,
                    path=v.path,
                    revision=v.revision,
                )
                for v in o.volumes
            ),
        ]
        entry = [f"{SHARED_MOUNT}/entry.py", *(["--each-run"] if each_run else []), CHUNK_MOUNT]
        return {
            "image": o.job_image,
            # not --quiet: uv's few lines ("Installed 57 packages in 41.2s", "Downloading torch (846.0MiB)")
            # become the call's dependency summary (see _console.SETUP_LINE)
            "command": ["uv", "run", "--python", o.python, *entry],
            "env": {"PYTHONUNBUFFERED": "1", **o.env},
            "secrets": self.secrets or None,
            "flavor": o.flavor,
            "timeout": o.timeout,
            "attempts": o.attempts if o.attempts > 1 else None,
            "volumes": volumes,
        }

    def create(self, chunk: str) -> JobInfo:
        """Create the job that runs one uploaded chunk (exactly once, whatever the network does)."""
        return self.hub.run_job(
            self.namespace,
            labels=self.labels(chunk),
            key={RUN_LABEL: self.run_id, CALL_LABEL: chunk},
            **self.spec(chunk),
        )
