"""A job's volumes: stored files laid out in a folder per volume, and what the job wrote synced back.

Each file comes from the storage's whole copy of its bytes (decoded once per stored file, not once per
job). A read-only volume in the sandbox gets hard links to those copies: its bind is read-only, so the
job can neither write nor chmod them. A read-write volume, or any volume of a job that runs as a
host process, gets copies, and a snapshot (size, mtime) of what it held: afterwards only files that
are new or changed are stored, and only files that are gone are deleted.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._store import Store
from ._xet import XetStorage


class JobFailure(Exception):
    """A job that cannot start (bad volume, unknown command): becomes ERROR with this message."""


@dataclass
class Mount:
    mount_path: str
    local: Path
    read_only: bool = True
    bucket: str | None = None  # set for read-write bucket volumes, which are synced back
    prefix: str = ""
    snapshot: dict[str, tuple[int, int]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)  # a repo volume's files, bound one by one


def mount_all(
    volumes: list[dict[str, Any]], folder: Path, store: Store, storage: XetStorage, link: bool
) -> list[Mount]:
    """Lay out every volume of a job under `folder`; longest mount path first."""
    mounts = []
    for i, volume in enumerate(volumes):
        if volume.get("type") == "bucket":
            mounts.append(_bucket(volume, folder / str(i), store, storage, link))
        else:
            mounts.append(_repo(volume))
    return sorted(mounts, key=lambda m: -len(m.mount_path))


def _bucket(volume: dict[str, Any], local: Path, store: Store, storage: XetStorage, link: bool) -> Mount:
    bucket = volume["source"]
    if store.bucket(bucket) is None:
        raise JobFailure(f"Bucket {bucket!r} of the volume at {volume['mountPath']} does not exist")
    prefix = f"{volume['path'].strip('/')}/" if (volume.get("path") or "").strip("/") else ""
    read_only = bool(volume.get("readOnly"))
    local.mkdir(parents=True, exist_ok=True)
    made: set[Path] = {local}
    for f in store.files(bucket, prefix):
        dest = local / f["path"][len(prefix) :]
        if dest.parent not in made:
            dest.parent.mkdir(parents=True, exist_ok=True)
            made.add(dest.parent)
        source = storage.local_file(f["xetHash"])
        if not (read_only and link and _link(source, dest)):
            shutil.copyfile(source, dest)
    mount = Mount(volume["mountPath"], local, read_only, None if read_only else bucket, prefix)
    if read_only and not link:  # a host process: the permissions are all that stands in its way
        for path in local.rglob("*"):
            path.chmod(0o555 if path.is_dir() else 0o444)
        local.chmod(0o555)
    elif not read_only:
        mount.snapshot = scan(local)
    return mount


def _link(source: Path, dest: Path) -> bool:
    try:
        os.link(source, dest)
        return True
    except OSError:  # another file system, or links not allowed: copy
        return False


def _repo(volume: dict[str, Any]) -> Mount:
    """A model/dataset/space volume, served from the local Hugging Face cache when it is there."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = Path(
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
    # The cache's snapshot holds links into its blobs folder: the sandbox binds each file's target.
    files = {p.relative_to(snapshot).as_posix(): p.resolve() for p in snapshot.rglob("*") if p.is_file()}
    return Mount(volume["mountPath"], snapshot, True, files=files)


def changes(mount: Mount) -> tuple[list[tuple[Path, str]], list[str]]:
    """(files to store as (local path, bucket path), bucket paths to delete) of a read-write volume."""
    now = scan(mount.local)
    add = [(mount.local / rel, mount.prefix + rel) for rel, sig in now.items() if mount.snapshot.get(rel) != sig]
    delete = [mount.prefix + rel for rel in mount.snapshot if rel not in now]
    return add, delete


def scan(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                if st.st_mode & 0o170000 == 0o100000:  # regular files only
                    out[os.path.relpath(path, root).replace(os.sep, "/")] = (st.st_size, st.st_mtime_ns)
    return out


def translate(text: str, mounts: list[Mount]) -> str:
    """Rewrite a container mount path (e.g. `/data/x.py`, `--out=/data`) to its local directory.

    Only for jobs that run as host processes; the sandbox binds volumes at their real paths.
    """
    for mount in mounts:  # longest mount path first
        pattern = r"(?<![\w./-])" + re.escape(mount.mount_path.rstrip("/")) + r"(?=/|$|[\s:,;'\"])"
        text = re.sub(pattern, str(mount.local).replace("\\", "\\\\"), text)  # a replacement template
    return text


def remove(folder: Path) -> None:
    """Delete a job's folder, read-only volume copies (folders made 0555) included."""

    def retry(function: Any, path: str, _: Any) -> None:
        with contextlib.suppress(OSError):  # in a read-only folder: make the folder writable, try again
            os.chmod(os.path.dirname(path), 0o755)
            function(path)

    shutil.rmtree(folder, onerror=retry)  # (onexc from Python 3.12; onerror still works there)
    if folder.exists():  # what even a retry could not delete: one more pass, best effort
        shutil.rmtree(folder, ignore_errors=True)
