"""Options of a remote function: what they mean, their defaults, and their validation.

Everything here is checked locally, before anything is uploaded or any job is created; a bad option
is an `OptionsError` that says what to write instead.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

import msgspec
from packaging.requirements import InvalidRequirement, Requirement

from .errors import OptionsError

RUN_MOUNT = "/hfremote"  # where the run's shared files and the job's chunk are mounted in the job
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


MAX_TIMEOUT = 30 * 86400  # the platform's limit on a job's timeout
ENV_ENTRY_MAX = 128 * 1024 - 1  # Linux's limit on one NAME=value string (MAX_ARG_STRLEN, with its NUL)
ENV_TOTAL_MAX = 512 * 1024  # env and secrets together, well under the platform's request size and ARG_MAX


class Options(msgspec.Struct, frozen=True, kw_only=True):
    """Every option of a remote function, typed: `build` converts the user's values with msgspec (strict:
    no "false" for False, no dict for a list), so a wrong type is refused as a whole, naming the option."""

    flavor: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] = "cpu-basic"
    timeout: Annotated[int, msgspec.Meta(ge=1, le=MAX_TIMEOUT)] = 1800
    dependencies: tuple[str, ...] = ()
    detect_dependencies: bool = True
    image: str | None = None
    python: str = LOCAL_PYTHON
    env: dict[str, str] = {}
    secrets: tuple[tuple[str, str | None], ...] = ()  # (name, value or None = read locally at submit)
    volumes: tuple[Mount, ...] = ()
    labels: dict[str, str] = {}
    attempts: Annotated[int, msgspec.Meta(ge=1, le=10)] = 1
    namespace: str | None = None
    name: str | None = None
    detach: bool = False  # Ctrl-C on a blocking call leaves the job running instead of cancelling it
    stream_logs: bool = True  # blocking calls print the job's log lines to stderr
    ship: tuple[str, ...] = ()  # modules that travel by value whatever their origin (Modal's add_local_python_source)
    pin: tuple[str, ...] = ()  # modules or distributions installed in the job at the caller's version, never shipped

    @property
    def job_image(self) -> str:
        return self.image or f"ghcr.io/astral-sh/uv:python{self.python}-bookworm"

    def __repr__(self) -> str:
        # Secret values never show: not in reprs, logs or tracebacks that print the options.
        fields = []
        for field in self.__struct_fields__:
            value = getattr(self, field)
            if field == "secrets":
                value = tuple((name, None if v is None else "***") for name, v in value)
            fields.append(f"{field}={value!r}")
        return f"Options({', '.join(fields)})"


# What to write instead, for each option (shown with msgspec's account of what was wrong).
_HINTS = {
    "flavor": "give a hardware name such as 'cpu-basic' or 'a10g-small'",
    "timeout": f"give seconds (5400) or a string such as '90s', '2h' or '1d', at most {MAX_TIMEOUT // 86400} days",
    "dependencies": "give a list of requirement strings such as ['numpy>=2', 'torch']",
    "detect_dependencies": "give True or False",
    "image": "give a container image such as 'python:3.12' or 'ghcr.io/org/image:tag'",
    "env": "give a dict of names to string values, such as {'MODE': 'fast'}",
    "secrets": "give a list of names (read from your environment) or a dict of names to values",
    "labels": "give a dict of string keys to string values, such as {'team': 'vision'}",
    "attempts": "give an integer from 1 to 10 (retries from 0 to 9)",
    "namespace": "give a user or organization name",
    "name": "give a short string",
    "detach": "give True or False",
    "stream_logs": "give True or False",
    "ship": "give a list of module names, such as ['mypkg']",
    "pin": "give a list of module or distribution names, such as ['mypkg']",
    "volumes": "give a list such as ['hf://datasets/org/name:/mnt']",
}
_PATH_RE = re.compile(r"\$\.(\w+)")
_IMAGE_RE = re.compile(
    r"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?[A-Za-z0-9]+(?:[._-]+[A-Za-z0-9]+)*(?:/[A-Za-z0-9]+(?:[._-]+[A-Za-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


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
    if seconds > MAX_TIMEOUT:
        raise OptionsError(
            f"timeout={value!r} is over the platform's limit of {MAX_TIMEOUT // 86400} days ({MAX_TIMEOUT} s): "
            "give a shorter timeout, and save checkpoints for work that runs longer"
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
    scheme = spec.partition("://")[0] if "://" in spec else "hf"
    if scheme != "hf":
        raise OptionsError(f"volume {spec!r}: only hf:// volumes (models, datasets, spaces, buckets) can be mounted")
    text = spec.removeprefix("hf://")  # before looking for ':', so 'hf://org/name' alone has no mount path
    access = None
    if text.endswith((":ro", ":rw")):
        text, access = text[:-3], text[-2:]
    source, sep, mount = text.rpartition(":")
    if sep and not mount.startswith("/") and ":" in source:  # 'org/b:/out:rx': the last part is a mode
        raise OptionsError(f"volume {spec!r}: unknown mode {mount!r}; end it with :ro, :rw, or nothing")
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
    for what, text in (
        ("source", mount.source),
        ("mount path", mount.mount_path),
        ("path", mount.path),
        ("revision", mount.revision),
    ):
        if text is not None and (not isinstance(text, str) or _CONTROL_RE.search(text) or len(text) > 1024):
            raise OptionsError(f"volume {what} {text!r} must be a plain string (no control characters such as NUL)")
    if mount.path is not None and any(part in ("", ".", "..") for part in mount.path.strip("/").split("/")):
        raise OptionsError(
            f"volume path {mount.path!r} must be a plain folder inside the repo or bucket (no '.', '..' or '//')"
        )
    if mount.revision is not None and (".." in mount.revision or not mount.revision.strip()):
        raise OptionsError(f"volume revision {mount.revision!r} must be a branch, tag or commit")
    if mount.type not in ("bucket", "model", "dataset", "space"):
        raise OptionsError(f"volume type {mount.type!r} is not one of bucket, model, dataset, space")
    if not _REPO_RE.match(mount.source):
        raise OptionsError(f"volume source {mount.source!r} is not 'namespace/name'")
    mp = mount.mount_path
    reserved = mp.rstrip("/") == RUN_MOUNT or mp.startswith(f"{RUN_MOUNT}/")
    if not mp.startswith("/") or mp.rstrip("/") == "" or reserved or ".." in mp.split("/"):
        raise OptionsError(
            f"volume mount path {mp!r} is not allowed: use an absolute path other than / and outside {RUN_MOUNT} "
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
    """Options from `base` with `overrides` applied, every value checked (types as a whole, then meaning)."""
    known = set(Options.__struct_fields__)
    unknown = sorted(set(overrides) - known - {"retries"})
    if unknown:
        raise OptionsError(f"unknown option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(known))}")
    if "retries" in overrides and "attempts" in overrides:
        raise OptionsError("give attempts= or retries=, not both (retries=N is attempts=N+1)")
    values: dict[str, Any] = {f: getattr(base or Options(), f) for f in known}
    for key, value in overrides.items():
        if key == "timeout":
            value = parse_timeout(value)
        elif key == "retries":  # retries=N is attempts=N+1
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 9:
                raise OptionsError(f"retries={_short(value)}: give an integer from 0 to 9 (retries=N is attempts=N+1)")
            key, value = "attempts", value + 1
        elif key == "dependencies":
            value = _parse_dependencies(value)
        elif key == "secrets":
            value = _parse_secrets(value)
        elif key == "volumes":
            value = _parse_volumes(value)
        elif key in ("env", "labels"):
            value = {} if value is None else dict(value) if isinstance(value, Mapping) else value
        elif key in ("ship", "pin"):
            value = _parse_modules(key, value)
        values[key] = value
    try:
        options = msgspec.convert(values, Options, strict=True)
    except msgspec.ValidationError as e:
        raise OptionsError(_explain(e, values)) from None
    _check(options)
    return options


def _explain(error: msgspec.ValidationError, values: dict[str, Any]) -> str:
    text = str(error)
    match = _PATH_RE.search(text)
    field = match[1] if match else ""
    what = text.partition(" - at ")[0]
    shown = "..." if field == "secrets" else _short(values.get(field))
    return f"{field}={shown} is not valid ({what}): {_HINTS.get(field, 'see the documentation of remote()')}"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + f"... ({len(text)} characters)"


def _parse_dependencies(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, Mapping):
        example = ", ".join(
            f"'{k}{v}'" for k, v in list(value.items())[:2] if isinstance(k, str) and isinstance(v, str)
        )
        raise OptionsError(
            f"dependencies={_short(value)} is a dict: give a list of requirement strings, with the version in each "
            f"string ([{example or 'numpy>=2'}])"
        )
    if not isinstance(value, Iterable):
        raise OptionsError("dependencies must be a list of requirement strings such as ['numpy>=2', 'torch']")
    deps = []
    for dep in value:
        try:
            if _CONTROL_RE.search(dep):
                raise InvalidRequirement(dep)
            Requirement(dep)
        except (InvalidRequirement, TypeError):
            raise OptionsError(
                f"dependency {_short(dep)} is not a valid requirement (e.g. 'numpy' or 'torch>=2.3')"
            ) from None
        deps.append(dep)
    return tuple(deps)


def _parse_volumes(value: object) -> tuple[Mount, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise OptionsError(f"volumes={_short(value)}: {_HINTS['volumes']}")
    return tuple(_parse_volume(v) for v in value)


def _parse_modules(option: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable) or isinstance(value, Mapping):
        raise OptionsError(f"{option}={_short(value)}: {_HINTS[option]}")
    names = []
    for name in value:
        if not isinstance(name, str) or not _MODULE_RE.match(name.replace("-", "_")):
            raise OptionsError(f"{option}: {_short(name)} is not a module name; {_HINTS[option]}")
        names.append(name)
    return tuple(names)


def check_env_size(env: Mapping[str, str], what: str = "env") -> None:
    """Refuse what the job could not start with ("Argument list too long") or the platform would refuse."""
    total = 0
    for name, value in env.items():
        size = len(name.encode()) + len(value.encode()) + 1
        if size > ENV_ENTRY_MAX:
            shown = name if len(name) <= 40 else name[:30] + "..."
            raise OptionsError(
                f"{what} {shown!r} is {size // 1024} KB; a job's variable is limited to {ENV_ENTRY_MAX // 1024} KB. "
                "Pass large data as an argument, or put it in a bucket and mount it with volumes=[...]"
            )
        total += size
    if total > ENV_TOTAL_MAX:
        raise OptionsError(
            f"{what} is {total // 1024} KB in all; the limit is {ENV_TOTAL_MAX // 1024} KB. Pass large data as an "
            "argument, or put it in a bucket and mount it with volumes=[...]"
        )


def _check(o: Options) -> None:
    if _CONTROL_RE.search(o.flavor):
        raise OptionsError(f"flavor={o.flavor!r}: {_HINTS['flavor']}")
    if o.python != LOCAL_PYTHON:
        raise OptionsError(
            f"python={o.python!r} differs from this interpreter ({LOCAL_PYTHON}): cloudpickle needs the same "
            f"Python version on both ends; run hfremote from a Python {o.python} interpreter instead"
        )
    if o.image is not None and (len(o.image) > 512 or not _IMAGE_RE.match(o.image)):
        raise OptionsError(f"image={_short(o.image)} is not a container image reference: {_HINTS['image']}")
    for name, value in o.env.items():
        if not _ENV_RE.match(name) or len(name) > 256:
            raise OptionsError(f"env name {_short(name)} is not a valid environment variable name")
        if "\x00" in value:
            raise OptionsError(f"env {name}: a value cannot contain a NUL character")
    check_env_size(o.env)
    clash = set(o.env) & {name for name, _ in o.secrets}
    if clash:
        raise OptionsError(f"{', '.join(sorted(clash))} is given both as env and as a secret; keep one")
    for key, value in o.labels.items():
        check_label(key, value)
        if key.startswith(LABEL_PREFIX) or key == "name":
            raise OptionsError(f"label {key!r} is reserved by hfremote; use name= for the job name")
    if o.name is not None and (not o.name.strip() or _CONTROL_RE.search(o.name)):
        raise OptionsError("name must be a non-empty string without control characters")
    if o.name is not None and len(o.name) > 100:
        raise OptionsError(f"name {o.name[:30]!r}... is {len(o.name)} characters; the platform allows 100")
    if o.namespace is not None and (not _LABEL_RE.match(o.namespace) or not o.namespace):
        raise OptionsError(f"namespace={o.namespace!r} is not a user or organization name")
    mounts = [v.mount_path.rstrip("/") for v in o.volumes]
    if len(mounts) != len(set(mounts)):
        raise OptionsError(f"two volumes share a mount path: {sorted(mounts)}")


def check_cost_cap(value: object) -> None:
    """`max_cost_usd`: None (no cap) or a positive number of dollars. NaN would turn the cap off."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise OptionsError(
            f"max_cost_usd={value!r} must be a positive number of dollars (such as 5 or 0.5), or None for no cap"
        )


def check_flag(name: str, value: object, optional: bool = False) -> None:
    """A boolean option: True or False (a string "false" would count as True)."""
    if not isinstance(value, bool) and not (optional and value is None):
        extra = ", or None" if optional else ""
        raise OptionsError(f"{name}={value!r} must be True or False{extra}")


def check_map_options(ordered: object, return_exceptions: object, progress: object, max_cost_usd: object) -> None:
    check_flag("ordered", ordered)
    check_flag("return_exceptions", return_exceptions)
    check_flag("progress", progress, optional=True)
    check_cost_cap(max_cost_usd)


def check_count(inputs: object) -> int:
    """The number of inputs of a map (`map_cost`): an integer >= 0 or a sized collection."""
    if isinstance(inputs, bool) or not (isinstance(inputs, int) or hasattr(inputs, "__len__")):
        raise OptionsError("map_cost() takes the number of inputs or a sized collection such as a list")
    count = inputs if isinstance(inputs, int) else len(inputs)
    if count < 0:
        raise OptionsError(f"map_cost({count}): the number of inputs cannot be negative")
    return count


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
    check_env_size({**options.env, **out}, "env and secrets")
    return out
