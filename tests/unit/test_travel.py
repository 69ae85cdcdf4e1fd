"""What travels by value and what is installed, decided from distribution metadata; calls pickled once."""

from __future__ import annotations

import importlib
import importlib.metadata
import io
import json
import pickle
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import msgspec
import pytest

from hfremote import OptionsError, PicklingError
from hfremote._calls import SPOOL_BYTES, Packer, write_chunk
from hfremote._origins import Rules, is_ours_file, refresh, requirement_of, requirements_of_distribution
from hfremote._packing import Scan, pack_function, pinned_dependencies

MSGSPEC = f"msgspec=={importlib.metadata.version('msgspec')}"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """A site folder on sys.path into which `install(...)` puts a package with its dist-info, as pip would."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    made: list[str] = []

    def install(
        direct: dict[str, Any] | None = None, requires: tuple[str, ...] = (), source: Path | None = None
    ) -> str:
        name = f"pkg_{uuid.uuid4().hex[:8]}"
        code = source or folder
        (code / name).mkdir(parents=True, exist_ok=True)
        (code / name / "__init__.py").write_text("def f(x):\n    return x\n")
        info = folder / f"{name}-1.2.3.dist-info"
        info.mkdir()
        meta = [f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3+local"] + [
            f"Requires-Dist: {r}" for r in requires
        ]
        (info / "METADATA").write_text("\n".join(meta) + "\n")
        record = f"{name}/__init__.py,,\n" if source is None else f"__editable__.{name}.pth,,\n"
        (info / "RECORD").write_text(record + f"{info.name}/METADATA,,\n")
        if direct is not None:
            (info / "direct_url.json").write_text(json.dumps(direct))
        if source is not None:
            (folder / f"__editable__.{name}.pth").write_text(str(source) + "\n")
            sys.path.append(str(source))
        importlib.invalidate_caches()
        refresh()  # what Scan and Packer do once each
        made.append(name)
        return name

    yield install
    for name in made:
        sys.modules.pop(name, None)


def _file(name: str) -> str:
    return str(importlib.import_module(name).__file__)


def test_an_index_distribution_is_pinned_at_its_public_version(site: Callable[..., str]) -> None:
    name = site()
    assert not is_ours_file(name, _file(name))
    assert requirement_of(name, _file(name)) == f"{name}==1.2.3"


def test_local_folder_vcs_and_local_file_installs_travel_by_value(site: Callable[..., str], tmp_path: Path) -> None:
    for direct in (
        {"url": f"file://{tmp_path}/acme", "dir_info": {}},
        {"url": "https://github.com/org/acme", "vcs_info": {"vcs": "git", "commit_id": "abc"}},
        {"url": f"file://{tmp_path}/acme-1.0-py3-none-any.whl", "archive_info": {}},
    ):
        name = site(direct)
        assert is_ours_file(name, _file(name)), direct
        assert requirement_of(name, _file(name)) is None


def test_a_conda_package_with_its_build_machines_direct_url_is_pinned(site: Callable[..., str]) -> None:
    name = site({"url": "file:///home/conda/feedstock_root/build_artifacts/pkg", "dir_info": {}})
    (Path(_file(name)).parents[1] / f"{name}-1.2.3.dist-info" / "INSTALLER").write_text("conda\n")
    refresh()
    importlib.invalidate_caches()
    from hfremote import _origins

    _origins._index.cache_clear()  # the same folder, the same times: only the INSTALLER file changed
    assert not is_ours_file(name, _file(name))
    assert requirement_of(name, _file(name)) == f"{name}==1.2.3"


def test_a_remote_archive_is_installed_from_the_same_url(site: Callable[..., str]) -> None:
    url = "https://example.com/acme-1.2.3-py3-none-any.whl"
    name = site({"url": url, "archive_info": {}})
    assert requirement_of(name, _file(name)) == f"{name} @ {url}"


def test_an_editable_install_travels_by_value_with_its_dependencies_installed(
    site: Callable[..., str], tmp_path: Path
) -> None:
    source = tmp_path / "checkout"
    name = site({"url": f"file://{source}", "dir_info": {"editable": True}}, ("msgspec", "nothing-here-hfr"), source)
    assert is_ours_file(name, _file(name))
    assert requirements_of_distribution(name, _file(name)) == [MSGSPEC]  # not installed here: left out
    module = importlib.import_module(name)
    scan = Scan(lambda x: module.f(x))
    assert name in scan.local
    assert pinned_dependencies(scan, []) == [MSGSPEC]


def test_a_module_no_distribution_provides_travels_by_value(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text("")
    assert is_ours_file("mine", str(tmp_path / "mine.py"))
    assert not is_ours_file("json", sys.modules["json"].__file__)
    assert not is_ours_file("msgspec", msgspec.__file__)


def test_ship_and_pin_override_the_origin(site: Callable[..., str]) -> None:
    name = site()
    module = importlib.import_module(name)
    fn = lambda x: module.f(x)  # noqa: E731
    assert name not in Scan(fn).local
    shipped = Scan(fn, ship=[name])
    assert name in shipped.local and pinned_dependencies(shipped, []) == []
    mine = site({"url": "file:///somewhere", "dir_info": {"editable": True}})
    other = importlib.import_module(mine)
    pinned = Scan(lambda x: other.f(x), pin=[mine])
    assert mine not in pinned.local
    assert pinned_dependencies(pinned, []) == [f"{mine}==1.2.3"]
    with pytest.raises(OptionsError, match=r"pin=\['no_such_dist_hfr'\].*dependencies="):
        pinned_dependencies(Scan(fn, pin=["no_such_dist_hfr"]), [])


class Point(msgspec.Struct):
    x: int


def total(a: Any) -> int:
    return len(str(a))


def test_distributions_of_arguments_are_installed() -> None:
    packer = Packer(total)
    packer.pack((Point(1),), {})
    assert packer.dependencies(["httpx"]) == ["httpx", MSGSPEC]
    assert packer.dependencies([MSGSPEC.replace("==", ">=")]) == [MSGSPEC.replace("==", ">=")]  # explicit wins


def test_a_map_input_needing_a_new_distribution_after_the_environment_is_set_warns() -> None:
    packer = Packer(total)
    packer.pack((1,), {})
    assert packer.dependencies([]) == []
    with pytest.warns(UserWarning, match=r"msgspec==.*dependencies="):
        packer.pack((Point(1),), {})


def test_open_files_are_refused_without_being_read() -> None:
    with open("/dev/zero", "rb") as zero, pytest.raises(PicklingError, match=r"argument 'a'.*open file.*volumes="):
        Packer(total).pack((zero,), {})
    with open(__file__) as text, pytest.raises(PicklingError, match="open file"):
        Packer(total).pack((), {"a": text})


def test_a_global_open_file_is_refused() -> None:
    handle = io.BytesIO(b"x")

    def uses() -> int:
        return len(handle.getvalue())

    with pytest.raises(PicklingError, match="handle"):
        pack_function(uses, Scan(uses))


def test_the_size_limit_is_checked_while_pickling(monkeypatch: pytest.MonkeyPatch) -> None:
    import hfremote._calls as calls

    monkeypatch.setattr(calls, "MAX_CALL_BYTES", 10 * SPOOL_BYTES)
    big = bytearray(20 * SPOOL_BYTES)  # refused at the write that would pass the limit, not after
    with pytest.raises(OptionsError, match=r"more than .* MB; the limit is .*volumes="):
        Packer(total).pack((big,), {})


@pytest.mark.parametrize("size", [10, SPOOL_BYTES + 10])
def test_chunk_files_are_the_entry_scripts_format(size: int) -> None:
    packer = Packer(total)
    calls = [(0, packer.pack((b"a" * size,), {})), (7, packer.pack((), {"a": 2})), (2**40, b"raw")]
    out = io.BytesIO()
    write_chunk(calls, out)
    loaded = pickle.loads(out.getvalue())
    assert [index for index, _ in loaded] == [0, 7, 2**40]
    assert cloudpickle.loads(loaded[0][1]) == ((b"a" * size,), {})
    assert cloudpickle.loads(loaded[1][1]) == ((), {"a": 2})
    assert loaded[2][1] == b"raw"


def test_take_reads_ahead_bounded_in_bytes() -> None:
    made: list[int] = []

    def inputs() -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
        for i in range(100):
            made.append(i)
            yield (b"x" * 1000,), {}

    calls = inputs()
    packer = Packer(total)
    taken, exhausted = packer.take(calls, 50, budget=5000)
    assert len(taken) == 5 and len(made) == 5 and not exhausted
    taken, exhausted = packer.take(calls, 500, budget=10**9)
    assert len(taken) == 95 and exhausted


def test_rules_never_ship_hfremote() -> None:
    assert not Rules(ship=["hfremote"]).ours(sys.modules["hfremote"])


def test_an_exception_whose_class_cannot_be_loaded_here_is_a_remote_error() -> None:
    from hfremote._future import decode_results
    from hfremote._raised import rebuild_exception

    # What the entry script sends for an exception of a class only the job has: pickled by reference.
    missing = b"\x80\x05\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x0fnot_here_hfr.mod\x94\x8c\x03Err\x94\x93\x94."
    payload = {"ok": False, "error": None, "type": "not_here_hfr.mod.Err", "message": "boom", "traceback": "tb\n"}
    assert rebuild_exception({**payload, "class": missing, "args": cloudpickle.dumps(("boom",))}) is None
    data = pickle.dumps((0, cloudpickle.dumps({**payload, "class": missing, "args": cloudpickle.dumps(("boom",))})))
    [(ok, error)] = decode_results(data).values()
    assert not ok and type(error).__name__ == "RemoteError" and "boom" in str(error)


BIG_TABLE = bytes(20 << 20)


def uses_big_table(i: int) -> int:
    return BIG_TABLE[i]


def test_large_captured_globals_are_named_in_a_warning() -> None:
    with pytest.warns(
        UserWarning, match=r"uses_big_table pickles to 21 MB because it captures 'BIG_TABLE' \(bytes, 21 MB\)"
    ):
        pack_function(uses_big_table, Scan(uses_big_table))


def test_unowned_files_in_a_site_folder_are_not_shipped(site: Callable[..., str]) -> None:
    name = site()  # makes the folder a site folder (it holds a distribution)
    folder = Path(_file(name)).parents[1]
    (folder / "_helper_hfr.py").write_text("")  # like _virtualenv.py, put there by a .pth installer
    assert not is_ours_file("_helper_hfr", str(folder / "_helper_hfr.py"))


def test_a_legacy_editable_install_in_its_source_tree_travels_by_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "proj"
    (project / "legacy_hfr").mkdir(parents=True)
    (project / "legacy_hfr" / "__init__.py").write_text("")
    (project / "setup.py").write_text("")
    info = project / "legacy_hfr.egg-info"
    info.mkdir()
    (info / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: legacy-hfr\nVersion: 0.1\n")
    (info / "top_level.txt").write_text("legacy_hfr\n")
    monkeypatch.syspath_prepend(str(project))
    importlib.invalidate_caches()
    refresh()
    assert is_ours_file("legacy_hfr", str(project / "legacy_hfr" / "__init__.py"))
    (project / "mine_hfr.py").write_text("")  # the project's own scripts, next to its metadata
    assert is_ours_file("mine_hfr", str(project / "mine_hfr.py"))


def with_default(p: Point = Point(3)) -> int:  # noqa: B008
    return p.x


def test_distributions_of_defaults_and_closure_values_are_installed() -> None:
    scan = Scan(with_default)
    pack_function(with_default, scan)
    assert pinned_dependencies(scan, []) == [MSGSPEC]
    point = msgspec.structs.replace(Point(1), x=2)

    def closes_over(x: int) -> int:
        return point.x + x

    scan = Scan(closes_over)
    pack_function(closes_over, scan)
    assert pinned_dependencies(scan, []) == [MSGSPEC]
