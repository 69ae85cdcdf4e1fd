"""A job's volumes: stored files laid out in a folder per volume, and what the job wrote synced back.

Each file comes from the storage's whole copy of its bytes (decoded once per stored file, not once per
job), hard-linked, never copied, when the job runs in the sandbox:

- read-only: the links, bound read-only (the job can neither write nor chmod them);
- read-write: an overlay whose lower layer is the links and whose upper layer receives what the job
  writes; afterwards the upper layer alone says what to store (its files) and what to delete (its
  whiteouts), so the cost follows what the job wrote, not the size of the volume.

The links of a bucket folder form a view that outlives the job (`Views`): the next job that mounts the
same folder finds it ready, brought up to date with what changed in the bucket since, so mounting costs
nothing more when the folder holds many files. A job that runs as a host process (or where the overlay
cannot be mounted) gets copies and a snapshot (size, mtime) of them instead; afterwards files that are
new or changed are stored, those gone deleted.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import threading
from collections import OrderedDict
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
    upper: Path | None = None  # an overlay's upper layer and work folder (`local` is its lower layer)
    work: Path | None = None
    view: tuple[str, str] | None = None  # the (bucket, prefix) view `local` is, while the job holds it
    source: str | None = None  # the bucket of a read-only copy (a host process's), which follows its changes


@dataclass
class _View:
    folder: Path
    files: dict[str, str] = field(default_factory=dict)  # path in the folder -> xet hash linked there
    version: int = -1  # the bucket's version it was brought up to date with
    users: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Views:
    """Hard-link trees of bucket folders, kept between jobs and refreshed by what changed in the bucket.

    A job binds a view read-only, or uses it as the lower layer of its overlay: never written through.
    A refresh while other jobs use the view only adds, replaces (a new link renamed over the old: open
    files keep their bytes) or removes links, as a bucket changes under a mount on the platform.
    """

    def __init__(self, root: Path, store: Store, storage: XetStorage, keep: int = 64) -> None:
        self._root, self._store, self._storage, self._keep = root, store, storage, keep
        self._lock = threading.Lock()
        self._views: OrderedDict[tuple[str, str], _View] = OrderedDict()
        self._made = 0

    def acquire(self, bucket: str, prefix: str) -> tuple[tuple[str, str], Path]:
        with self._lock:
            view = self._views.get((bucket, prefix))
            if view is None:
                self._made += 1
                view = self._views[(bucket, prefix)] = _View(self._root / str(self._made))
            self._views.move_to_end((bucket, prefix))
            view.users += 1
        try:
            with view.lock:
                self._refresh(bucket, prefix, view)
        except BaseException:
            self.release((bucket, prefix))
            raise
        return (bucket, prefix), view.folder

    def release(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._views[key].users -= 1
            idle = [k for k, v in self._views.items() if v.users == 0]
            for k in idle[: max(0, len(self._views) - self._keep)]:  # the least recently used first
                remove(self._views.pop(k).folder)

    def refresh_in_use(self, bucket: str, paths: list[str]) -> None:
        """Bring the views that running jobs hold up to date with files just written to `bucket`."""
        with self._lock:
            held = [(key, view) for key, view in self._views.items() if view.users > 0 and key[0] == bucket]
        for (_, prefix), view in held:
            if any(path.startswith(prefix) for path in paths):
                with view.lock:
                    self._refresh(bucket, prefix, view)

    def _refresh(self, bucket: str, prefix: str, view: _View) -> None:
        version = self._store.bucket_version(bucket)  # read first: a change during the listing is seen next time
        if version == view.version:
            return
        now = {f["path"][len(prefix) :]: f["xetHash"] for f in self._store.files(bucket, prefix)}
        view.folder.mkdir(parents=True, exist_ok=True)
        for rel in [rel for rel in view.files if rel not in now]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(view.folder / rel)
            _prune(view.folder, (view.folder / rel).parent)
        for rel, xet_hash in now.items():
            if view.files.get(rel) != xet_hash:
                dest = view.folder / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(f".{dest.name}.{threading.get_ident()}.new")
                source = self._storage.local_file(xet_hash)
                if not _link(source, tmp):
                    shutil.copyfile(source, tmp)
                os.replace(tmp, dest)
        view.files, view.version = now, version


def _prune(root: Path, folder: Path) -> None:
    """Remove `folder` and its parents up to `root` while they are empty (a bucket has no empty folders)."""
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def mount_all(
    volumes: list[dict[str, Any]],
    folder: Path,
    store: Store,
    storage: XetStorage,
    views: Views | None,
    overlay: bool,
) -> list[Mount]:
    """Lay out every volume of a job under `folder` (on the storage's file system); longest mount path first.

    `views`: the job runs in the sandbox, where bucket folders are views bound read-only (or under an
    overlay, when `overlay`); without, it gets copies.
    """
    mounts: list[Mount] = []
    try:
        for i, volume in enumerate(volumes):
            if volume.get("type") == "bucket":
                mounts.append(_bucket(volume, folder / str(i), store, storage, views, overlay))
            else:
                mounts.append(_repo(volume))
    except BaseException:
        release(mounts, views)
        raise
    return sorted(mounts, key=lambda m: -len(m.mount_path))


def release(mounts: list[Mount], views: Views | None) -> None:
    """Give back the views a job's volumes used."""
    for mount in mounts:
        if mount.view is not None and views is not None:
            views.release(mount.view)
            mount.view = None


def _bucket(
    volume: dict[str, Any], folder: Path, store: Store, storage: XetStorage, views: Views | None, overlay: bool
) -> Mount:
    bucket = volume["source"]
    if store.bucket(bucket) is None:
        raise JobFailure(f"Bucket {bucket!r} of the volume at {volume['mountPath']} does not exist")
    prefix = f"{volume['path'].strip('/')}/" if (volume.get("path") or "").strip("/") else ""
    read_only = bool(volume.get("readOnly"))
    if views is not None and (read_only or overlay):
        key, tree = views.acquire(bucket, prefix)
        mount = Mount(volume["mountPath"], tree, read_only, None if read_only else bucket, prefix, view=key)
        if not read_only:
            mount.upper, mount.work = folder / "upper", folder / "work"
            mount.upper.mkdir(parents=True)
            mount.work.mkdir()
        return mount
    # Copies: a host process could chmod and write a link (and so the stored file); so could a
    # read-write volume without an overlay.
    folder.mkdir(parents=True, exist_ok=True)
    made: set[Path] = {folder}
    for f in store.files(bucket, prefix):
        dest = folder / f["path"][len(prefix) :]
        if dest.parent not in made:
            dest.parent.mkdir(parents=True, exist_ok=True)
            made.add(dest.parent)
        shutil.copyfile(storage.local_file(f["xetHash"]), dest)
    mount = Mount(volume["mountPath"], folder, read_only, None if read_only else bucket, prefix)
    if read_only:  # a host process: the permissions are all that stands in its way
        mount.source = bucket
        for path in folder.rglob("*"):
            path.chmod(0o555 if path.is_dir() else 0o444)
        folder.chmod(0o555)
    else:
        mount.snapshot = scan(folder)
    return mount


def update_copy(mount: Mount, paths: list[str], store: Store, storage: XetStorage) -> None:
    """Rewrite the files of a read-only copy that were just written to its bucket (a host process's)."""
    for path in paths:
        record = store.file(mount.source or "", path) if path.startswith(mount.prefix) else None
        dest = mount.local / path[len(mount.prefix) :]
        if record is None or not dest.parent.is_dir():
            continue
        part = dest.parent / f".{dest.name}.{threading.get_ident()}.part"
        try:
            dest.parent.chmod(0o755)
            shutil.copyfile(storage.local_file(record["xetHash"]), part)
            part.chmod(0o444)
            os.replace(part, dest)  # a reader sees the old file or the new one, never half of it
        except OSError:
            pass  # the job ended meanwhile: its folder is gone
        finally:
            with contextlib.suppress(OSError):
                dest.parent.chmod(0o555)


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
    if mount.upper is not None:
        return _overlay_changes(mount.local, mount.upper, mount.prefix)
    now = scan(mount.local)
    add = [(mount.local / rel, mount.prefix + rel) for rel, sig in now.items() if mount.snapshot.get(rel) != sig]
    delete = [mount.prefix + rel for rel in mount.snapshot if rel not in now]
    return add, delete


def _xattr(path: str, name: str) -> bytes | None:
    """An overlay attribute: `trusted.overlay.*` as root, `user.overlay.*` in a user namespace."""
    for namespace in ("trusted", "user"):
        with contextlib.suppress(OSError):
            return os.getxattr(path, f"{namespace}.overlay.{name}", follow_symlinks=False)
    return None


def _overlay_changes(lower: Path, upper: Path, prefix: str) -> tuple[list[tuple[Path, str]], list[str]]:
    """What a job changed, read from its overlay's upper layer alone (the kernel's overlayfs format).

    A file there is new or was opened for writing (kept if its size or mtime differ from the lower
    file's); a 0/0 character device is a deletion; an opaque folder replaced the lower one (what the
    lower one held and the upper does not is deleted); a folder with a redirect is a moved lower one.
    """
    add: list[tuple[Path, str]] = []
    delete: set[str] = set()

    def lower_files(rel: str) -> list[str]:
        base = lower / rel
        if base.is_file():
            return [rel]
        return [f"{rel}/{name}" if rel else name for name in scan(base)] if base.is_dir() else []

    for dirpath, dirnames, names in os.walk(upper):
        rel_dir = os.path.relpath(dirpath, upper).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir
        if rel_dir and _xattr(dirpath, "opaque") == b"y":
            kept = {f"{rel_dir}/{n}" for n in scan(Path(dirpath))}
            delete.update(f for f in lower_files(rel_dir) if f not in kept)
        for name in dirnames:
            redirect = _xattr(os.path.join(dirpath, name), "redirect")
            if redirect:  # a lower folder moved here: its files, unless the upper one holds newer ones
                source = (
                    redirect.decode().lstrip("/")
                    if redirect.startswith(b"/")
                    else f"{rel_dir}/{redirect.decode()}".lstrip("/")
                )
                target = f"{rel_dir}/{name}".lstrip("/")
                for f in lower_files(source):
                    moved = target + f[len(source) :]
                    if not (upper / moved).exists():
                        add.append((lower / f, moved))
        for name in names:
            path = os.path.join(dirpath, name)
            rel = f"{rel_dir}/{name}" if rel_dir else name
            st = os.lstat(path)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # a whiteout
                delete.update(lower_files(rel))
            elif stat.S_ISREG(st.st_mode) and _xattr(path, "metacopy") is None:  # metacopy: metadata only
                before = lower / rel
                old = before.stat() if before.is_file() else None
                if old is None or (old.st_size, old.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                    add.append((Path(path), rel))
    added = {rel for _, rel in add}
    return [(p, prefix + rel) for p, rel in add], sorted(prefix + rel for rel in delete if rel not in added)


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

    def retry(function: Any, path: str, error: Any) -> None:
        if not isinstance(error[1], PermissionError):
            return  # gone already, say; the second pass below gives up on anything else
        with contextlib.suppress(OSError):  # a read-only (or overlay work) folder: open it up, try again
            for folder in (os.path.dirname(path), path):
                if os.path.isdir(folder) and not os.path.islink(folder):
                    os.chmod(folder, 0o755)
            function(path)

    if not os.path.lexists(folder):
        return
    shutil.rmtree(folder, onerror=retry)  # (onexc from Python 3.12; onerror still works there)
    if folder.exists():  # what even a retry could not delete: one more pass, best effort
        shutil.rmtree(folder, ignore_errors=True)
