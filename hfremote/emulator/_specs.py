"""What the API accepts: request bodies decoded with msgspec and checked the way the platform would.

Every problem becomes a 400 whose message says what to fix; nothing here ever raises a 500.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from .._cron import schedule_problem
from ._hardware import check_flavor
from ._util import bad_request

MAX_TIMEOUT_SECONDS = 30 * 86400
LABEL_RE = re.compile(r"^[A-Za-z0-9_-]*$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$")
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class Volume(msgspec.Struct, rename="camel", omit_defaults=True):
    source: str
    mount_path: str
    type: str = "model"
    revision: str | None = None
    read_only: bool | None = None
    path: str | None = None


class Expose(msgspec.Struct, rename="camel"):
    ports: list[int] = []
    ports_public: list[int] = []


class Network(msgspec.Struct, rename="camel"):
    group: str
    aliases: list[str] = []


class JobSpec(msgspec.Struct, rename="camel"):
    command: list[str] = []
    arguments: list[str] = []
    environment: dict[str, str] = {}
    flavor: str = "cpu-basic"
    secrets: dict[str, str] = {}
    timeout_seconds: int | None = None
    attempts: int | None = None
    labels: dict[str, str] = {}
    volumes: list[Volume] = []
    expose: Expose | None = None
    ssh: dict[str, Any] | None = None
    network: Network | None = None
    resource_group_id: str | None = None
    docker_image: str | None = None
    space_id: str | None = None
    # Echoed back by scheduled jobs: JobSpec reads `timeout` and `retry`; accepted and ignored here.
    timeout: int | None = None
    retry: int | None = None


class ScheduledJobRequest(msgspec.Struct, rename="camel"):
    job_spec: JobSpec
    schedule: str
    concurrency: bool | None = None
    suspend: bool | None = None


class LabelsRequest(msgspec.Struct):
    labels: dict[str, str]


class ScheduleRequest(msgspec.Struct):
    schedule: str


class ExposeRequest(msgspec.Struct, rename="camel"):
    ports: list[int] = []
    ports_public: list[int] = []


class PathsRequest(msgspec.Struct):
    paths: list[str]


class BucketCreate(msgspec.Struct, rename="camel"):
    visibility: str | None = None
    private: bool | None = None
    resource_group_id: str | None = None
    region: str | None = None


class RepoMove(msgspec.Struct, rename="camel"):
    from_repo: str
    to_repo: str
    type: str = "model"


class BatchOp(msgspec.Struct, rename="camel"):
    type: str
    path: str
    xet_hash: str | None = None
    mtime: int | None = None
    content_type: str | None = None
    source_repo_type: str | None = None
    source_repo_id: str | None = None


def decode(body: bytes, kind: type[Any], what: str) -> Any:
    if not body.strip():
        body = b"{}"
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as e:
        raise bad_request(f"Invalid {what}: {e}") from None
    except msgspec.DecodeError as e:
        raise bad_request(f"Malformed JSON in {what}: {e}") from None


def check_labels(labels: dict[str, str]) -> None:
    for key, value in labels.items():
        for part, text in (("key", key), ("value", value)):
            if len(text) > 100:
                raise bad_request(f"Label {part} {text[:20]!r}... is {len(text)} characters long; the limit is 100")
            if not LABEL_RE.match(text):
                raise bad_request(
                    f"Label {part} {text!r} (label {key!r}) may only contain letters, digits, '-' and '_'"
                )
        if not key:
            raise bad_request("Label keys must not be empty")


def check_path(path: str, what: str) -> str:
    """A relative path inside a bucket or volume: no traversal, no absolute paths, no odd characters."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or "\x00" in path or any(p in ("", ".", "..") for p in parts):
        raise bad_request(f"Invalid {what} {path!r}: use a relative path without '.', '..' or empty segments")
    return path


def check_schedule(schedule: str) -> str:
    """The platform's presets or a 5-field cron expression."""
    if problem := schedule_problem(schedule):
        raise bad_request(problem)
    return schedule


def check_job_spec(spec: JobSpec) -> JobSpec:
    if bool(spec.docker_image) == bool(spec.space_id):
        raise bad_request("Give exactly one of 'dockerImage' or 'spaceId'")
    if spec.docker_image is not None and not spec.command:
        raise bad_request("'command' must be a non-empty list of strings for a Docker image job")
    if spec.docker_image is not None and not IMAGE_RE.match(spec.docker_image):
        raise bad_request(f"Invalid dockerImage {spec.docker_image!r}: expected an image reference such as python:3.12")
    if spec.space_id is not None and not REPO_ID_RE.match(spec.space_id):
        raise bad_request(f"Invalid spaceId {spec.space_id!r}: expected 'namespace/name'")
    if problem := check_flavor(spec.flavor):
        raise bad_request(problem)
    if spec.timeout_seconds is not None and not 0 < spec.timeout_seconds <= MAX_TIMEOUT_SECONDS:
        raise bad_request(
            f"Invalid timeoutSeconds {spec.timeout_seconds}: it must be between 1 and {MAX_TIMEOUT_SECONDS} (30 days)"
        )
    if spec.attempts is not None and not 1 <= spec.attempts <= 10:
        raise bad_request(f"Invalid attempts {spec.attempts}: it must be between 1 and 10")
    for name in (*spec.environment, *spec.secrets):
        if not ENV_NAME_RE.match(name):
            raise bad_request(f"Invalid environment variable name {name!r}")
    check_labels(spec.labels)
    mounts = set()
    for v in spec.volumes:
        if v.type not in ("bucket", "model", "dataset", "space"):
            raise bad_request(f"Invalid volume type {v.type!r}: use bucket, model, dataset or space")
        if not REPO_ID_RE.match(v.source):
            raise bad_request(f"Invalid volume source {v.source!r}: expected 'namespace/name'")
        mp = v.mount_path
        if not mp.startswith("/") or mp == "/" or ".." in mp.split("/") or "\x00" in mp:
            raise bad_request(f"Invalid mountPath {mp!r}: use an absolute path such as /data")
        if mp.rstrip("/") in mounts:
            raise bad_request(f"Two volumes are mounted at {mp!r}")
        mounts.add(mp.rstrip("/"))
        if v.path:
            check_path(v.path.strip("/"), "volume path")
        if v.type != "bucket" and v.read_only is False:
            raise bad_request(f"{v.type} volume {v.source!r} can only be mounted read-only")
    if spec.network is not None and not re.match(r"^[a-z0-9-]{1,46}$", spec.network.group):
        raise bad_request("network.group must be 1-46 lowercase letters, digits or '-'")
    for port in (*spec.expose.ports, *spec.expose.ports_public) if spec.expose else ():
        if not 1 <= port <= 65535:
            raise bad_request(f"Invalid expose port {port}: ports are 1-65535")
    if spec.ssh is not None and spec.ssh.get("enabled", True):
        raise bad_request("The emulator has no SSH: jobs run as local processes. Run the job without --ssh (ssh=True)")
    return spec
