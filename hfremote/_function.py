"""The `remote` decorator and RemoteFunction: a function that runs as a Hugging Face job when called.

@remote(flavor="a10g-small", timeout="2h")
def train(lr: float) -> dict: ...

train(3e-4)               # blocks, streams the job's logs to stderr, returns the value
train.submit(3e-4)        # RemoteFuture[dict] at once
train.local(3e-4)         # a plain call
train.options(flavor="a100-large")(1e-3)
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import tempfile
import threading
import types
from collections.abc import Callable, Generator, Iterable, Sized
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import cloudpickle
from huggingface_hub import JobInfo, Volume

from ._calls import PackedCall, Packer, describe, short_name, write_chunk
from ._config import current_hub
from ._future import CALL_LABEL, FUNCTION_LABEL, RUN_LABEL, RemoteFuture, local_lines, watch
from ._hub import Hub
from ._inside import LocalFunction
from ._map import CostEstimate, MapRun, MapSettings, calls_of, estimate, length_of
from ._options import RUN_MOUNT, Options, build, check_count, resolve_secrets, sanitize
from ._origins import Rules
from ._packing import Scan, check_function, pack_function, pinned_dependencies, render_entry
from ._schedule import ScheduledFunction, schedule

P = ParamSpec("P")
Q = ParamSpec("Q")
R = TypeVar("R")
S = TypeVar("S")


def new_run_id() -> str:
    """Sortable and unique: a UTC timestamp and 6 random hex digits (label-safe)."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{os.urandom(3).hex()}"


class RemoteFunction(Generic[P, R]):
    """A function that runs as a Hugging Face job. Calling it blocks; `submit` returns a future."""

    def __init__(self, fn: Callable[P, R], options: Options) -> None:
        check_function(fn)
        self._fn = fn
        self._options = options
        # A callable instance's attributes (its own `_options`, say) must not land on this object.
        functools.update_wrapper(self, fn, updated=functools.WRAPPER_UPDATES if inspect.isfunction(fn) else ())

    @property
    def function(self) -> Callable[P, R]:
        return self._fn

    @property
    def settings(self) -> Options:
        """The options jobs of this function are created with."""
        return self._options

    def options(self, **overrides: Any) -> RemoteFunction[P, R]:
        """A copy with some options changed: `train.options(flavor="a100-large")(lr)`."""
        return RemoteFunction(self._fn, build(self._options, **overrides))

    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function here, as a plain Python call."""
        return self._fn(*args, **kwargs)

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> RemoteFuture[R]:
        """Start a job for this call and return its future at once."""
        packer = Packer(self._fn, Rules(self._options.ship, self._options.pin))
        inputs = packer.pack(args, kwargs)  # wrong or unpicklable arguments fail before any request
        return Prepared(current_hub(), self._fn, self._options, packer).launch_one(inputs)

    def map(
        self,
        *iterables: Iterable[Any],
        chunksize: int = 1,
        max_parallel: int = 16,
        ordered: bool = True,
        return_exceptions: bool = False,
        retries: int = 0,
        progress: bool | None = None,
        logs: str = "errors",
        max_cost_usd: float | None = None,
        **options: Any,
    ) -> Generator[R, None, None]:
        """`fn(*args)` for args zipped from the iterables, as jobs; results in input order (or as they come).

        Each job runs `chunksize` inputs; at most `max_parallel` jobs are unfinished at once. Inputs are
        read lazily. The first failure (after `retries` re-runs of the failed inputs) cancels the map's
        unfinished jobs and raises, unless `return_exceptions`. `progress` shows a bar (default: on a
        terminal); `logs` is "errors" (print failed inputs' log tails), "all" or "none".
        `max_cost_usd` refuses to launch jobs whose worst case (timeout x jobs x price) exceeds it.
        """
        settings = MapSettings(
            chunksize, max_parallel, ordered, return_exceptions, retries, progress, logs, max_cost_usd
        )
        return self._map(iterables, False, settings, options)

    def starmap(
        self,
        iterable: Iterable[Iterable[Any]],
        chunksize: int = 1,
        max_parallel: int = 16,
        ordered: bool = True,
        return_exceptions: bool = False,
        retries: int = 0,
        progress: bool | None = None,
        logs: str = "errors",
        max_cost_usd: float | None = None,
        **options: Any,
    ) -> Generator[R, None, None]:
        """Like `map`, with each item of `iterable` unpacked as the arguments: `fn(*item)`."""
        settings = MapSettings(
            chunksize, max_parallel, ordered, return_exceptions, retries, progress, logs, max_cost_usd
        )
        return self._map((iterable,), True, settings, options)

    def _map(
        self, iterables: tuple[Iterable[Any], ...], star: bool, run: MapSettings, options: dict[str, Any]
    ) -> Generator[R, None, None]:
        # Everything that can be checked is checked now, before the caller starts iterating (`run` was
        # checked when made).
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        settings = build(self._options, **options) if options else self._options
        prepared = Prepared(current_hub(), self._fn, settings)
        return MapRun(prepared, calls_of(iterables, star), run, length_of(iterables)).__iter__()

    def map_cost(self, inputs: int | Sized, chunksize: int = 1, retries: int = 0, **options: Any) -> CostEstimate:
        """The worst case of a map before launching it: jobs x timeout x the flavor's price, counting the
        platform's attempts and the map's `retries` (every input failing every time).

        `inputs` is the number of inputs, or a sized collection of them (a generator would be used up).
        """
        MapSettings(chunksize=chunksize, retries=retries)  # checks them
        settings = build(self._options, **options) if options else self._options
        count = check_count(inputs)
        hub = current_hub()
        hub.check_flavor(settings.flavor)
        price = hub.hardware()[settings.flavor]["price_per_minute"]
        return estimate(price, settings, count, chunksize, retries)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the call as a job and wait for it, printing its log lines to stderr."""
        future = self.submit(*args, **kwargs)
        return wait_streaming(future, self._options)

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> RemoteFunction[P, R]: ...

    @overload
    def __get__(
        self: RemoteFunction[Concatenate[S, Q], R], instance: S, owner: type[Any] | None = None
    ) -> RemoteFunction[Q, R]: ...

    def __get__(self, instance: Any, owner: type[Any] | None = None) -> Any:
        """`@remote` on a method binds like a method: `Trainer().fit(3)` runs `fit(trainer, 3)` as a job,
        with the instance pickled along."""
        if instance is None:
            return self
        return RemoteFunction(types.MethodType(self._fn, instance), self._options)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Inside a job (a recursive function, or one that calls another remote function), calls are plain
        # calls: the remote function travels as a LocalFunction, whose class travels by value (see _inside).
        return (LocalFunction, (self._fn,))

    def __repr__(self) -> str:
        return f"<RemoteFunction {describe(self._fn)} flavor={self._options.flavor}>"


class Prepared:
    """Everything checked and packed for a run, ready to upload: the part shared by all its calls."""

    def __init__(self, hub: Hub, fn: Callable[..., Any], options: Options, packer: Packer | None = None) -> None:
        self.hub, self.fn, self.options = hub, fn, options
        # Local checks first, then those that ask the platform: bad input costs no request.
        self.secrets = resolve_secrets(options, hub.token)
        scan = Scan(fn, options.ship, options.pin)
        self.packer = packer or Packer(fn, scan.rules)  # packs the inputs; notes what their objects need
        self.function = pack_function(fn, scan)
        self.code_files = scan.code_files
        explicit = list(options.dependencies)
        self.dependencies = pinned_dependencies(scan, explicit) if options.detect_dependencies else explicit
        self.run_id = new_run_id()
        self.folder = f"runs/{self.run_id}"  # in the bucket; scheduled functions use schedules/<name>/<spec>
        self.name = sanitize(str(options.name or short_name(fn)))
        self.namespace = hub.namespace(options.namespace)
        hub.check_flavor(options.flavor)
        self._uploaded = False
        self._entry: str | None = None

    @property
    def entry(self) -> str:
        """The entry script, made when first needed: the first inputs' objects name distributions too."""
        if self._entry is None:
            if self.options.detect_dependencies:
                self.dependencies = self.packer.dependencies(self.dependencies)
            self._entry = render_entry(self.options.python, self.dependencies)
        return self._entry

    def upload(self, chunks: dict[str, list[tuple[int, PackedCall]]]) -> None:
        """Upload chunks of inputs in one batch (with the entry script and function, the first time)."""
        with tempfile.TemporaryDirectory(prefix="hfremote-upload-") as tmp:
            self._upload(chunks, Path(tmp))

    def _upload(self, chunks: dict[str, list[tuple[int, PackedCall]]], tmp: Path) -> None:
        files: list[tuple[str | Path | bytes, str]] = []
        if not self._uploaded:
            manifest = {
                "python": self.options.python,
                "cloudpickle": cloudpickle.__version__,
                "function": describe(self.fn),
                "dependencies": self.dependencies,
                "created": datetime.now(timezone.utc).isoformat(),
            }
            files += [
                (self.entry.encode(), f"{self.folder}/entry.py"),
                (json.dumps(manifest, indent=1).encode(), f"{self.folder}/manifest.json"),
                (self.function, f"{self.folder}/function.pkl"),
            ]
        for chunk, calls in chunks.items():  # each call's bytes copied from where it was pickled, once
            with open(tmp / f"{chunk}.pkl", "wb") as out:
                write_chunk(calls, out)
            files.append((tmp / f"{chunk}.pkl", f"{self.folder}/inputs/{chunk}.pkl"))
        self.hub.upload(self.bucket, files)
        self._uploaded = True

    @property
    def bucket(self) -> str:
        return self.hub.bucket(self.namespace)

    def labels(self, chunk: str) -> dict[str, str]:
        function = sanitize(describe(self.fn))
        return {
            **self.options.labels,
            RUN_LABEL: self.run_id,
            CALL_LABEL: chunk,
            FUNCTION_LABEL: function,
            "name": self.name,
        }

    def spec(self, chunk: str, each_run: bool = False) -> dict[str, Any]:
        """The job spec (as `run_job` takes it) that runs one uploaded chunk with the run folder at /data."""
        o = self.options
        volumes = [
            Volume(type="bucket", source=self.bucket, mount_path=RUN_MOUNT, read_only=False, path=self.folder),
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
        entry = [f"{RUN_MOUNT}/entry.py", *(["--each-run"] if each_run else []), chunk]
        return {
            "image": o.job_image,
            "command": ["uv", "run", "--quiet", "--python", o.python, *entry],
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

    def launch_one(self, call: PackedCall) -> RemoteFuture[Any]:
        self.upload({"0": [(0, call)]})
        info = self.create("0")
        future: RemoteFuture[Any] = RemoteFuture(self.hub, self.namespace, info, self.run_id, "0", self.name, 0)
        future.code_files = self.code_files
        watch(future)
        return future


_print_lock = threading.Lock()


def wait_streaming(future: RemoteFuture[R], options: Options) -> R:
    """Wait for a job, printing its log lines to stderr; Ctrl-C cancels it (or detaches, if asked)."""
    prefix = f"[{future.name} {future.job_id[:8]}] "
    try:
        if options.stream_logs:
            for line in local_lines(future.logs(follow=True), future.code_files):
                with _print_lock:
                    print(prefix + line, file=sys.stderr, flush=True)
        return future.result()
    except KeyboardInterrupt:
        if options.detach:
            print(
                f"\nhfremote: detached; job {future.job_id} keeps running ({future.url}). "
                f"Re-attach with RemoteFuture.attach({future.job_id!r})",
                file=sys.stderr,
            )
        else:
            future.cancel()
            print(f"\nhfremote: cancelled job {future.job_id} ({future.url})", file=sys.stderr)
        raise


class _Remote:
    """`remote`: the decorator (`@remote`, `@remote(...)`) and `remote.schedule(...)`."""

    @overload
    def __call__(self, fn: Callable[P, R], /) -> RemoteFunction[P, R]: ...

    @overload
    def __call__(
        self,
        /,
        *,
        flavor: str = ...,
        timeout: int | float | str = ...,
        dependencies: list[str] | tuple[str, ...] = ...,
        detect_dependencies: bool = ...,
        image: str | None = ...,
        python: str = ...,
        env: dict[str, str] | None = ...,
        secrets: list[str] | dict[str, str | None] | None = ...,
        volumes: list[Any] | None = ...,
        labels: dict[str, str] | None = ...,
        attempts: int = ...,
        retries: int = ...,
        namespace: str | None = ...,
        name: str | None = ...,
        detach: bool = ...,
        stream_logs: bool = ...,
        ship: list[str] | tuple[str, ...] = ...,
        pin: list[str] | tuple[str, ...] = ...,
    ) -> Callable[[Callable[P, R]], RemoteFunction[P, R]]: ...

    def __call__(self, fn: Callable[P, R] | None = None, /, **options: Any) -> Any:
        """Make a function run as a Hugging Face job: `@remote` or `@remote(flavor=..., timeout=...)`.

        Options (checked now, before anything is uploaded): flavor, timeout ("90s", "30m", "2h", "1d" or
        seconds), dependencies, detect_dependencies, image, python, env, secrets (names read from your
        environment, or values), volumes ("hf://datasets/org/name:/mnt"), labels, attempts (or retries),
        namespace, name, detach (Ctrl-C leaves the job running), stream_logs, ship (modules sent by value
        whatever their origin), pin (modules or distributions installed in the job instead of sent).

        Any callable works: a function, a functools.partial, a callable instance; on a method in a class
        body it binds like a method. Inside a job, a remote function called by another runs as a plain call.
        """
        settings = build(None, **options)
        if fn is not None:
            return RemoteFunction(fn, settings)

        def decorate(function: Callable[P, R]) -> RemoteFunction[P, R]:
            return RemoteFunction(function, settings)

        return decorate

    @staticmethod
    def schedule(
        cron: str, *, concurrency: bool | None = None, suspend: bool | None = None, **options: Any
    ) -> Callable[[Callable[P, R]], ScheduledFunction[P, R]]:
        """`@remote.schedule("@daily", flavor=..., timeout=...)`: a function deployed as a scheduled job."""
        return schedule(cron, concurrency=concurrency, suspend=suspend, **options)

    def __repr__(self) -> str:
        return "<hfremote.remote>"


remote = _Remote()
