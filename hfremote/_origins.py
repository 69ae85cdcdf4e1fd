"""Where a module comes from, decided from the installed distributions' metadata (not from paths):

- the standard library, hfremote itself and cloudpickle: never shipped, never installed;
- a distribution installed from an index (pip/uv/conda/apt, a `--with` overlay, ...): installed in the
  job, pinned to the caller's version;
- the user's own: a module that no installed distribution provides (a script's folder, a PYTHONPATH
  folder, a notebook's directory), or one whose distribution is editable or was installed from a local
  folder, a local file or a VCS checkout (PEP 610 `direct_url.json`): it travels by value, since no
  index has it (or an index has a public package of the same name, which is worse).

Paths alone cannot tell these apart: `uv run --with`, PYTHONPATH, conda and Debian's `dist-packages`
all put installed packages outside the interpreter's own site-packages.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
import sysconfig
import types
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from urllib.parse import unquote, urlparse

from packaging.version import InvalidVersion, Version

NEVER_SHIPPED = frozenset({"hfremote", "cloudpickle", "__main__", "builtins"})


@dataclass(frozen=True)
class _Dist:
    name: str
    version: str
    location: Path  # the site folder it is installed in
    direct: dict[str, object] | None  # its PEP 610 direct_url.json, if it was installed from a URL

    @property
    def by_value(self) -> bool:
        """Installed from somewhere no index knows: editable, a local folder or file, a VCS checkout."""
        if self.direct is None:
            return self.in_source_tree
        url = str(self.direct.get("url", ""))
        return "dir_info" in self.direct or "vcs_info" in self.direct or url.startswith("file:")

    @cached_property
    def in_source_tree(self) -> bool:
        """A legacy editable install (`setup.py develop`): its metadata sits in the project's own folder,
        with no direct_url.json."""
        return any((self.location / name).is_file() for name in ("pyproject.toml", "setup.py", "setup.cfg"))

    @property
    def source_dir(self) -> Path | None:
        """The folder an editable or local-folder install points at."""
        if self.direct is None or "dir_info" not in self.direct:
            return None
        url = urlparse(str(self.direct.get("url", "")))
        return Path(unquote(url.path)).resolve() if url.scheme == "file" else None

    @property
    def requirement(self) -> str:
        """How the job installs it: the caller's public version, or the same remote archive."""
        if self.direct is not None and "archive_info" in self.direct and not self.by_value:
            return f"{self.name} @ {self.direct['url']}"
        try:
            return f"{self.name}=={Version(self.version).public}"
        except InvalidVersion:
            return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class _Index:
    by_top: dict[str, list[_Dist]]  # top-level import name -> the distributions that provide it
    by_name: dict[str, _Dist]  # canonical distribution name -> the one import would see first
    sources: list[tuple[Path, _Dist]]  # source folders of editable / local-folder installs
    sites: tuple[Path, ...]  # the folders distributions are installed in (site-packages, --target folders)


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _read_direct(dist: importlib.metadata.Distribution) -> dict[str, object] | None:
    # conda packages built with `pip install .` may carry the build machine's direct_url.json (a
    # file:// folder that is not here): they come from a channel, like an index's.
    if (dist.read_text("INSTALLER") or "").strip().lower() == "conda":
        return None
    try:
        text = dist.read_text("direct_url.json")
        data = json.loads(text) if text else None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@lru_cache(maxsize=4)
def _index(key: tuple[tuple[str, int], ...]) -> _Index:
    """Every distribution visible on sys.path (`key`: its folders and their times), as import would find
    them (the first one wins)."""
    by_name: dict[str, _Dist] = {}
    for dist in importlib.metadata.distributions(path=[folder for folder, _ in key]):
        name = dist.metadata["Name"] if dist.metadata else None
        if not name or _canonical(name) in by_name:
            continue
        location = Path(str(dist.locate_file(""))).resolve()
        by_name[_canonical(name)] = _Dist(name, dist.version or "0", location, _read_direct(dist))
    by_top: dict[str, list[_Dist]] = {}
    for top, names in importlib.metadata.packages_distributions().items():
        found = [by_name[_canonical(n)] for n in dict.fromkeys(names) if _canonical(n) in by_name]
        if found:
            by_top[top] = found
    sources = [(d.source_dir, d) for d in by_name.values() if d.source_dir is not None]
    sites = tuple({d.location for d in by_name.values() if not d.in_source_tree})
    return _Index(by_top, by_name, [(folder, d) for folder, d in sources if folder is not None], sites)


_key: list[tuple[tuple[str, int], ...]] = [()]


def refresh() -> None:
    """Look again at what is installed if a folder of sys.path changed (a `pip install` since the last call).

    Called once per function and per batch of calls: a stat of each sys.path folder, not of each module.
    """
    key = []
    for folder in sys.path:
        try:
            key.append((folder, os.stat(folder or ".").st_mtime_ns))
        except OSError:
            key.append((folder, 0))
    _key[0] = tuple(key)


def _current() -> _Index:
    return _index(_key[0] or tuple((p, 0) for p in sys.path))


@lru_cache(maxsize=1)
def _stdlib_dirs() -> tuple[Path, ...]:
    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")}
    return tuple(Path(p).resolve() for p in paths if p)


def _under(file: Path, folder: Path) -> bool:
    return file == folder or folder in file.parents


def distribution_of(name: str, file: str | None) -> _Dist | None:
    """The installed distribution that provides module `name` loaded from `file`, if any."""
    index = _current()
    top = name.partition(".")[0]
    candidates = index.by_top.get(top, [])
    if file is None:
        return candidates[0] if candidates else None
    path = _resolved(file)
    for dist in candidates:
        if _under(path, dist.location) or (dist.source_dir is not None and _under(path, dist.source_dir)):
            return dist
    if any(_under(path, site) for site in index.sites):
        return None  # installed there, but by no distribution (a .pth helper such as _virtualenv)
    for folder, dist in index.sources:  # an editable install whose RECORD names no package
        if _under(path, folder) and folder.parent != folder:
            return dist
    return None  # a module of the user's own, or one shadowing an installed package of the same name


@lru_cache(maxsize=16384)
def _resolved(file: str) -> Path:
    # Cached: every packed call looks at every loaded module, and resolving a path costs system calls.
    return Path(file).resolve()


def module_file(module: types.ModuleType) -> str | None:
    file = getattr(module, "__file__", None)
    return str(file) if file else None


def is_ours_file(name: str, file: str | None) -> bool:
    """Whether module `name`, loaded from `file`, is the user's own: the job cannot install it."""
    return _is_ours(name, file, _key[0])


@lru_cache(maxsize=16384)
def _is_ours(name: str, file: str | None, _installed: tuple[tuple[str, int], ...]) -> bool:
    top = name.partition(".")[0]
    if top in NEVER_SHIPPED or top in sys.stdlib_module_names or not file:
        return False
    dist = distribution_of(name, file)
    if dist is not None:
        return dist.by_value
    path = _resolved(file)
    if any(_under(path, site) for site in _current().sites):
        return False  # in a site folder but owned by no distribution (a .pth helper): not the user's code
    return not any(_under(path, folder) for folder in _stdlib_dirs())  # e.g. _sysconfigdata_*, plat-specific


def is_ours(module: types.ModuleType) -> bool:
    return is_ours_file(module.__name__, module_file(module))


def requirement_of(name: str, file: str | None) -> str | None:
    """`dist==version` that installs module `name` in the job, or None (stdlib, or not installed here)."""
    top = name.partition(".")[0]
    if top in NEVER_SHIPPED or top in sys.stdlib_module_names:
        return None
    dist = distribution_of(name, file)
    return dist.requirement if dist is not None and not dist.by_value else None


def requirements_of_distribution(name: str, file: str | None) -> list[str]:
    """What a distribution that travels by value needs installed: its own dependencies, as installed here.

    An editable `acme-utils` that requires `requests` ships its code, and the job installs `requests`.
    """
    dist = distribution_of(name, file)
    if dist is None or _canonical(dist.name) in NEVER_SHIPPED:  # hfremote's own checkout (its tests)
        return []
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        requires = importlib.metadata.distribution(dist.name).requires or []
    except importlib.metadata.PackageNotFoundError:
        return []
    out = []
    for text in requires:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        found = _current().by_name.get(_canonical(req.name))
        if found is not None and not found.by_value:
            out.append(found.requirement)
    return out


def requirement_of_distribution(name: str) -> str | None:
    """`dist==version` for an installed distribution named `name` (or providing the import `name`)."""
    index = _current()
    dist = index.by_name.get(_canonical(name))
    if dist is None:
        found = index.by_top.get(name.partition(".")[0])
        dist = found[0] if found else None
    if dist is None:
        return None
    try:
        return f"{dist.name}=={Version(dist.version).public}"
    except InvalidVersion:
        return f"{dist.name}=={dist.version}"


class Rules:
    """Which modules travel by value: the user's own (see `_origins`), plus those named in `ship`, minus
    those named in `pin` (installed in the job at the caller's version instead)."""

    def __init__(self, ship: Iterable[str] = (), pin: Iterable[str] = ()) -> None:
        self.ship, self.pin = tuple(ship), tuple(pin)
        refresh()

    def _named(self, name: str, names: tuple[str, ...]) -> bool:
        return any(name == n or name.startswith(n + ".") for n in names)

    def ours_file(self, name: str, file: str | None) -> bool:
        if self._named(name, self.pin):
            return False
        if self._named(name, self.ship) and name.partition(".")[0] not in NEVER_SHIPPED:
            return True
        return is_ours_file(name, file)

    def ours(self, module: types.ModuleType) -> bool:
        return self.ours_file(module.__name__, module_file(module))
