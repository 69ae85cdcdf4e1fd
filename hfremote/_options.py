"""Options of a remote function: what they mean, their defaults, and their validation.

Everything here is checked locally, before anything is uploaded or any job is created; a bad option
is an `OptionsError` that says what to write instead.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from packaging.requirements import InvalidRequirement, Requirement

from .errors import OptionsError

RUN_MOUNT = "/data"  # where the run folder is mounted in the job
LABEL_PREFIX = "hfremote-"
_LABEL_RE = re.compile(r"^[A-Za-z0-9_-]*$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TIMEOUT_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
LOCAL_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


class Mount(msgspec.Struct, frozen=True):
    """A Hub repo or bucket mounted in the job (huggingface_hub's Volume, validated)."""

    type: str
    source: str
    mount_path: str
    read_only: bool
    path: str | None = None
    revision: str | None = None


class Options(msgspec.Struct, frozen=True, kw_only=True):
    flavor: str = "cpu-basic"
    timeout: int = 1800
    dependencies: tuple[str, ...] = ()
    detect_dependencies: bool = True
    image: str | None = None
    python: str = LOCAL_PYTHON
    env: dict[str, str] = {}
    secrets: tuple[tuple[str, str | None], ...] = ()  # (name, value or None = read locally at submit)
    volumes: tuple[Mount, ...] = ()
    labels: dict[str, str] = {}
    attempts: int = 1
    namespace: str | None = None
    name: str | None = None
    detach: bool = False  # Ctrl-C on a blocking call leaves the job running instead of cancelling it
    stream_logs: bool = True  # blocking calls print the job's log lines to stderr
    ship: tuple[str, ...] = ()  # modules that travel by value whatever their origin (Modal's add_local_python_source)
    pin: tuple[str, ...] = ()  # modules or distributions installed in the job at the caller's version, never shipped

    @property
    def job_image(self) -> str:
        return self.image or f"ghcr.io/astral-sh/uv:python{self.python}-bookworm"


def parse_timeout(value: object) -> int:
    """Seconds from `5400`, `"90s"`, `"30m"`, `"1.5h"`, `"1d"` (the units `hf jobs` accepts)."""
    seconds: float | None = None
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        match = _TIMEOUT_RE.match(text)
        if match:
            seconds = float(match[1]) * _UNITS[match[2]]
        elif text.isdigit():
            seconds = float(text)
    if seconds is None or not seconds >= 1 or seconds != seconds or seconds == float("inf"):
        raise OptionsError(
            f"timeout={value!r} is not a duration: give seconds (5400) or a string such as '90s', '30m', "
            "'2h' or '1d' (at least one second)"
        )
    return int(seconds)


def check_label(key: str, value: str, what: str = "label") -> None:
    for part, text in (("key", key), ("value", value)):
        if not isinstance(text, str):
            raise OptionsError(f"{what} {part} {text!r} must be a string")
        if len(text) > 100:
            raise OptionsError(f"{what} {part} {text[:30]!r}... is {len(text)} characters; the platform allows 100")
        if not _LABEL_RE.match(text):
            raise OptionsError(f"{what} {part} {text!r} may only contain letters, digits, '-' and '_'")
    if not key:
        raise OptionsError(f"{what} keys must not be empty")


def sanitize(text: str, limit: int = 100) -> str:
    """A label-safe rendering of `text` (`mod.func` -> `mod-func`), cut to `limit` characters."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:limit] or "fn"


def _parse_volume(spec: object) -> Mount:
    if hasattr(spec, "mount_path") and hasattr(spec, "source"):  # a huggingface_hub Volume
        kind = getattr(spec, "type", "model")
        read_only = getattr(spec, "read_only", None)
        return _checked_mount(
            Mount(
                kind,
                spec.source,
                spec.mount_path,
                kind != "bucket" or bool(read_only),
                getattr(spec, "path", None),
                getattr(spec, "revision", None),
            )
        )
    if not isinstance(spec, str):
        raise OptionsError(f"volume {spec!r} must be a string like 'hf://datasets/org/name:/mnt' or a Volume")
    # hf://[models|datasets|spaces|buckets/]SOURCE[/PATH]:/MOUNT[:ro|:rw], as `hf jobs run -v` takes it
    text = spec.removeprefix("hf://")  # before looking for ':', so 'hf://org/name' alone has no mount path
    access = None
    if text.endswith((":ro", ":rw")):
        text, access = text[:-3], text[-2:]
    source, sep, mount = text.rpartition(":")
    if not sep or not source:
        raise OptionsError(f"volume {spec!r} has no mount path: write 'hf://datasets/org/name:/mnt'")
    kind = "model"
    for prefix, name in (("models/", "model"), ("datasets/", "dataset"), ("spaces/", "space"), ("buckets/", "bucket")):
        if source.startswith(prefix):
            kind, source = name, source[len(prefix) :]
            break
    parts = source.split("/")
    repo, path = "/".join(parts[:2]), "/".join(parts[2:]) or None
    revision = None
    if "@" in repo:
        repo, _, revision = repo.partition("@")
    read_only = access != "rw" if kind == "bucket" else True
    if kind != "bucket" and access == "rw":
        raise OptionsError(f"volume {spec!r}: {kind} repos can only be mounted read-only")
    return _checked_mount(Mount(kind, repo, mount, read_only, path, revision))


def _checked_mount(mount: Mount) -> Mount:
    if mount.type not in ("bucket", "model", "dataset", "space"):
        raise OptionsError(f"volume type {mount.type!r} is not one of bucket, model, dataset, space")
    if not _REPO_RE.match(mount.source):
        raise OptionsError(f"volume source {mount.source!r} is not 'namespace/name'")
    mp = mount.mount_path
    if not mp.startswith("/") or mp.rstrip("/") in ("", RUN_MOUNT) or ".." in mp.split("/"):
        raise OptionsError(
            f"volume mount path {mp!r} is not allowed: use an absolute path other than / and {RUN_MOUNT} "
            f"({RUN_MOUNT} holds hfremote's run folder)"
        )
    return mount


def _parse_secrets(secrets: object) -> tuple[tuple[str, str | None], ...]:
    if secrets is None:
        return ()
    if isinstance(secrets, str):
        secrets = [secrets]
    items: Iterable[tuple[str, str | None]]
    if isinstance(secrets, Mapping):
        items = secrets.items()
    elif isinstance(secrets, Iterable):
        items = [(name, None) for name in secrets]
    else:
        raise OptionsError("secrets must be a list of names (read from your environment) or a dict of values")
    out = []
    for name, value in items:
        if not isinstance(name, str) or not _ENV_RE.match(name):
            raise OptionsError(f"secret name {name!r} is not a valid environment variable name")
        if value is not None and not isinstance(value, str):
            raise OptionsError(f"secret {name!r} must be a string (or None to read it from your environment)")
        out.append((name, value))
    return tuple(out)


def build(base: Options | None = None, **overrides: Any) -> Options:
    """Options from `base` with `overrides` applied, every value checked."""
    known = set(Options.__struct_fields__)
    unknown = sorted(set(overrides) - known - {"retries"})
    if unknown:
        raise OptionsError(f"unknown option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for key, value in overrides.items():
        if key == "timeout":
            value = parse_timeout(value)
        elif key == "retries":  # retries=N is attempts=N+1
            key, value = "attempts", (value + 1 if isinstance(value, int) and not isinstance(value, bool) else value)
        elif key == "dependencies":
            value = _parse_dependencies(value)
        elif key == "secrets":
            value = _parse_secrets(value)
        elif key == "volumes":
            value = tuple(_parse_volume(v) for v in (value or ()))
        elif key in ("env", "labels"):
            value = dict(value or {})
        values[key] = value
    options = msgspec.structs.replace(base or Options(), **values)
    _check(options)
    return options


def _parse_dependencies(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable):
        raise OptionsError("dependencies must be a list of requirement strings such as ['numpy>=2', 'torch']")
    deps = []
    for dep in value:
        try:
            Requirement(dep)
        except (InvalidRequirement, TypeError):
            raise OptionsError(
                f"dependency {dep!r} is not a valid requirement (e.g. 'numpy' or 'torch>=2.3')"
            ) from None
        deps.append(dep)
    return tuple(deps)


def _check(o: Options) -> None:
    if not isinstance(o.flavor, str) or not o.flavor:
        raise OptionsError(f"flavor={o.flavor!r} must be a hardware name such as 'cpu-basic' or 'a10g-small'")
    if not isinstance(o.attempts, int) or isinstance(o.attempts, bool) or not 1 <= o.attempts <= 10:
        raise OptionsError(f"attempts={o.attempts!r} must be an integer from 1 to 10 (retries from 0 to 9)")
    if o.python != LOCAL_PYTHON:
        raise OptionsError(
            f"python={o.python!r} differs from this interpreter ({LOCAL_PYTHON}): cloudpickle needs the same "
            f"Python version on both ends; run hfremote from a Python {o.python} interpreter instead"
        )
    for name, value in o.env.items():
        if not isinstance(name, str) or not _ENV_RE.match(name):
            raise OptionsError(f"env name {name!r} is not a valid environment variable name")
        if not isinstance(value, str):
            raise OptionsError(f"env {name}={value!r} must be a string")
    clash = set(o.env) & {name for name, _ in o.secrets}
    if clash:
        raise OptionsError(f"{', '.join(sorted(clash))} is given both as env and as a secret; keep one")
    for key, value in o.labels.items():
        check_label(key, value)
        if key.startswith(LABEL_PREFIX) or key == "name":
            raise OptionsError(f"label {key!r} is reserved by hfremote; use name= for the job name")
    if o.name is not None and (not isinstance(o.name, str) or not o.name.strip()):
        raise OptionsError("name must be a non-empty string")
    if o.name is not None and len(o.name) > 100:
        raise OptionsError(f"name {o.name[:30]!r}... is {len(o.name)} characters; the platform allows 100")
    if o.namespace is not None and (not isinstance(o.namespace, str) or not _LABEL_RE.match(o.namespace)):
        raise OptionsError(f"namespace={o.namespace!r} is not a user or organization name")
    mounts = [v.mount_path.rstrip("/") for v in o.volumes]
    if len(mounts) != len(set(mounts)):
        raise OptionsError(f"two volumes share a mount path: {sorted(mounts)}")


def resolve_secrets(options: Options, platform_token: str | None) -> dict[str, str]:
    """Secret values, names read from the local environment (like `hf jobs -s NAME`).

    A bare HF_TOKEN falls back to the token of the platform the job runs on, never to a token saved
    for another endpoint.
    """
    out = {}
    for name, value in options.secrets:
        if value is None:
            value = os.environ.get(name)
            if value is None and name == "HF_TOKEN":
                value = platform_token
            if value is None:
                raise OptionsError(
                    f"secret {name!r} is not set in your environment: export {name}=... or pass "
                    f"secrets={{{name!r}: value}}"
                )
        out[name] = value
    return out
