"""The one seam to huggingface_hub: namespace, artifacts bucket, jobs, logs; retries and error mapping.

The client retries only listings and bucket batches; everything else (run, inspect, cancel,
scheduled jobs) makes one attempt. Every call here is wrapped: 429 and 5xx are retried with backoff
honouring `Retry-After`, and a job creation whose answer was lost is looked up by its labels before
it is retried, so a job is never created twice.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from httpx2 import TransportError  # huggingface_hub 2.x sends its requests with httpx2
from huggingface_hub import HfApi, JobInfo, get_session, hf_raise_for_status
from huggingface_hub._jobs_api import ScheduledJobInfo
from huggingface_hub.errors import BadRequestError, EntryNotFoundError, HfHubHTTPError
from huggingface_hub.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

from .errors import BackendError, OptionsError

T = TypeVar("T")
log = logging.getLogger("hfremote")
BUCKET = "hfremote"
_RETRY_STATUS = (408, 429, 500, 502, 503, 504)
_MAX_TRIES = 8
_UNSERVED = object()  # the endpoint does not serve plain file downloads


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _retry_after(error: BaseException, default: float) -> float:
    response = getattr(error, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return min(60.0, max(0.0, float(value))) if value is not None else default
    except ValueError:
        return default


def _transient(error: BaseException) -> bool:
    return isinstance(error, TransportError) or _status(error) in _RETRY_STATUS


_quiet_lock = threading.Lock()
_quiet_depth = 0


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No progress bars for hfremote's own small transfers (the client only has a global switch)."""
    global _quiet_depth
    with _quiet_lock:
        if _quiet_depth == 0 and are_progress_bars_disabled():
            _quiet_depth = -1_000_000  # the user turned them off: never turn them back on
        if _quiet_depth == 0:
            disable_progress_bars()
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                enable_progress_bars()


_SCHEDULED_ACTIONS = {  # each one sets a state, so repeating it after a lost answer changes nothing more
    "inspect": "inspect_scheduled_job",
    "delete": "delete_scheduled_job",
    "suspend": "suspend_scheduled_job",
    "resume": "resume_scheduled_job",
    "update_schedule": "update_scheduled_job_schedule",
}


class Hub:
    """A huggingface_hub client bound to one endpoint and token, with what it has learnt cached."""

    def __init__(
        self, endpoint: str, token: str | None, *, is_emulator: bool = False, give_up_after: float = 300.0
    ) -> None:
        self.endpoint, self.is_emulator, self.token = endpoint.rstrip("/"), is_emulator, token
        self.give_up_after = give_up_after  # seconds of failures in a row after which a request is given up
        self.api = HfApi(
            endpoint=self.endpoint, token=token, library_name="hfremote", library_version=version("hfremote")
        )
        self._lock = threading.Lock()
        self._namespace: str | None = None
        self._hardware: dict[str, dict[str, Any]] | None = None
        self._buckets: set[str] = set()
        self._plain_get = True

    # -- retries ---------------------------------------------------------------------------------
    def call(
        self, what: str, fn: Callable[[], T], on_lost: Callable[[], T | None] | None = None, tries: int = _MAX_TRIES
    ) -> T:
        """Run `fn`, retrying transient failures; `on_lost` finds the result of a request whose answer was lost.

        Gives up after `tries` attempts, or once the endpoint has failed for `give_up_after` seconds in a
        row. A look-up that fails is not a license to send again: the next attempt looks up first.
        (huggingface_hub retries some calls itself first; `tries=1` leaves those retries alone.)
        """
        delay = 0.5
        failing_since: float | None = None
        look_first = False
        for attempt in range(1, tries + 1):
            try:
                if look_first and on_lost is not None:
                    found = on_lost()
                    look_first = False
                    if found is not None:
                        return found
                return fn()
            except BadRequestError as e:
                raise OptionsError(f"{what} was refused: {e.server_message or e}") from None
            except (HfHubHTTPError, TransportError) as e:
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                if not _transient(e) or attempt == tries or now - failing_since > self.give_up_after:
                    raise BackendError(f"{what} failed: {e}") from e
                # A 429 was refused outright; a 5xx or a dropped connection may have been carried out.
                look_first = look_first or (on_lost is not None and _status(e) != 429)
                wait = _retry_after(e, delay)
                log.debug("%s: %s; retrying in %.1fs (attempt %d)", what, e, wait, attempt)
                time.sleep(wait)
                delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")

    # -- identity, hardware, bucket ----------------------------------------------------------------
    def namespace(self, requested: str | None = None) -> str:
        if requested:
            return requested
        with self._lock:
            if self._namespace is None:
                self._namespace = self.call("whoami", lambda: str(self.api.whoami()["name"]))
            return self._namespace

    def hardware(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            if self._hardware is None:
                rows = self.call("listing the hardware flavors", self.api.list_jobs_hardware)
                self._hardware = {
                    row.name: {"price_per_minute": row.unit_cost_usd, "pretty": row.pretty_name} for row in rows
                }
            return self._hardware

    def check_flavor(self, flavor: str) -> None:
        hardware = self.hardware()
        if flavor not in hardware:
            raise OptionsError(
                f"flavor {flavor!r} is not a hardware flavor of this platform; valid: {', '.join(hardware)}"
            )

    def bucket(self, namespace: str) -> str:
        bucket_id = f"{namespace}/{BUCKET}"
        if bucket_id not in self._buckets:
            self.call(
                f"creating bucket {bucket_id}",
                lambda: self.api.create_bucket(bucket_id, private=True, exist_ok=True),
            )
            self._buckets.add(bucket_id)
        return bucket_id

    # -- files -----------------------------------------------------------------------------------
    def upload(self, bucket_id: str, files: list[tuple[str | Path | bytes, str]]) -> None:
        def send() -> None:
            with _quiet():
                try:
                    self.api.batch_bucket_files(bucket_id, add=files)
                except (RuntimeError, ConnectionError) as e:  # hf_xet's, once its own retries are spent
                    raise BackendError(f"uploading {len(files)} files to {bucket_id} failed: {e}") from e

        self.call(f"uploading {len(files)} files to {bucket_id}", send)

    def download(self, bucket_id: str, path: str) -> bytes | None:
        """A file's bytes, or None when it does not exist.

        A plain GET of the file's resolve URL is one request (the Xet download takes five or six); when
        the endpoint does not serve it, the Xet download is used from then on.
        """
        if self._plain_get:
            found = self.call(f"downloading {path} from {bucket_id}", lambda: self._get(bucket_id, path))
            if found is not _UNSERVED:
                return found if isinstance(found, bytes) else None
            self._plain_get = False

        def fetch() -> bytes | None:
            with tempfile.TemporaryDirectory(prefix="hfremote-") as tmp:
                dest = Path(tmp) / "file"
                try:
                    with _quiet():
                        self.api.download_bucket_files(bucket_id, [(path, dest)], raise_on_missing_files=True)
                except EntryNotFoundError:
                    return None
                except RuntimeError as e:  # hf_xet's transfer error, once its own retries are spent
                    raise BackendError(f"downloading {path} from {bucket_id} failed: {e}") from e
                return dest.read_bytes() if dest.exists() else None

        return self.call(f"downloading {path} from {bucket_id}", fetch)

    def _get(self, bucket_id: str, path: str) -> bytes | object | None:
        url = f"{self.endpoint}/buckets/{bucket_id}/resolve/{quote(path, safe='/')}"
        headers = self.api._build_hf_headers()  # the exact headers (token, user agent) of every other call
        response = get_session().get(url, headers=headers, timeout=120)
        if response.status_code == 404:
            return None
        if response.status_code in _RETRY_STATUS:
            hf_raise_for_status(response)  # retried by `call`
        if response.status_code != 200:
            return _UNSERVED
        return bytes(response.content)

    def delete(self, bucket_id: str, paths: list[str]) -> None:
        self.call(f"deleting {len(paths)} files", lambda: self.api.batch_bucket_files(bucket_id, delete=paths))

    # -- jobs ------------------------------------------------------------------------------------
    def run_job(self, namespace: str, labels: dict[str, str], key: dict[str, str], **spec: Any) -> JobInfo:
        """Create a job exactly once; `key` (a subset of labels) identifies it if an answer is lost."""

        def lookup() -> JobInfo | None:
            found = list(self.api.list_jobs(namespace=namespace, labels=key))
            return found[0] if found else None

        return self.call(
            "creating the job", lambda: self.api.run_job(namespace=namespace, labels=labels, **spec), on_lost=lookup
        )

    def list_jobs(
        self, namespace: str, labels: dict[str, str], stages: list[str] | None = None, tries: int = _MAX_TRIES
    ) -> list[JobInfo]:
        def fetch() -> list[JobInfo]:
            return list(self.api.list_jobs(namespace=namespace, labels=labels, status=stages))

        return self.call("listing jobs", fetch, tries=tries)

    def inspect(self, namespace: str, job_id: str, tries: int = _MAX_TRIES) -> JobInfo:
        return self.call(
            f"inspecting job {job_id}", lambda: self.api.inspect_job(job_id=job_id, namespace=namespace), tries=tries
        )

    def cancel(self, namespace: str, job_id: str) -> None:
        self.call(f"cancelling job {job_id}", lambda: self.api.cancel_job(job_id=job_id, namespace=namespace))

    def log_stream(self, namespace: str, job_id: str, follow: bool, tail: int | None = None) -> Iterator[str]:
        return iter(self.api.fetch_job_logs(job_id=job_id, namespace=namespace, follow=follow, tail=tail))

    def metrics(self, namespace: str, job_id: str) -> dict[str, Any] | None:
        samples = self.call(
            "reading metrics", lambda: list(self.api.fetch_job_metrics(job_id=job_id, namespace=namespace))
        )
        return samples[0] if samples else None

    # -- scheduled jobs --------------------------------------------------------------------------
    def _scheduled_with(self, namespace: str, labels: dict[str, str]) -> list[ScheduledJobInfo]:
        """One listing (no retries of ours), filtered here too: the labels are matched as given."""
        found = self.api.list_scheduled_jobs(namespace=namespace, labels=labels)
        return [s for s in found if all((s.job_spec.labels or {}).get(k) == v for k, v in labels.items())]

    def list_scheduled(self, namespace: str, labels: dict[str, str]) -> list[ScheduledJobInfo]:
        return self.call("listing scheduled jobs", lambda: self._scheduled_with(namespace, labels))

    def create_scheduled(self, namespace: str, key: dict[str, str], **spec: Any) -> ScheduledJobInfo:
        """Create a scheduled job once; `key` (a subset of its labels) finds it if the answer was lost."""

        def lookup() -> ScheduledJobInfo | None:
            same = self._scheduled_with(namespace, key)
            return same[0] if same else None

        return self.call(
            "creating the scheduled job",
            lambda: self.api.create_scheduled_job(namespace=namespace, **spec),
            on_lost=lookup,
        )

    def trigger_scheduled(self, namespace: str, sched_id: str, labels: dict[str, str]) -> JobInfo:
        """Run a scheduled job now, once: if the answer is lost, the job it made is looked up (by its
        labels, among the jobs that were not there before) instead of triggering again."""
        before = {info.id for info in self.list_jobs(namespace, labels)}

        def lookup() -> JobInfo | None:
            new = [info for info in self.api.list_jobs(namespace=namespace, labels=labels) if info.id not in before]
            return min(new, key=lambda info: (info.created_at is None, info.created_at, info.id)) if new else None

        return self.call(
            f"triggering scheduled job {sched_id}",
            lambda: self.api.trigger_scheduled_job(scheduled_job_id=sched_id, namespace=namespace),
            on_lost=lookup,
        )

    def scheduled(self, namespace: str, action: str, sched_id: str, **extra: Any) -> Any:
        """inspect, delete, suspend, resume, trigger or update_schedule one scheduled job."""
        method: Callable[..., Any] = getattr(self.api, _SCHEDULED_ACTIONS[action])
        return self.call(
            f"{action.replace('_', ' ')} of scheduled job {sched_id}",
            lambda: method(scheduled_job_id=sched_id, namespace=namespace, **extra),
        )

    def list_files(self, bucket_id: str, prefix: str) -> list[str]:
        def fetch() -> list[str]:
            items = self.api.list_bucket_tree(bucket_id, prefix=prefix, recursive=True)
            return [item.path for item in items if getattr(item, "type", "file") == "file"]

        return self.call(f"listing {prefix} in {bucket_id}", fetch)
