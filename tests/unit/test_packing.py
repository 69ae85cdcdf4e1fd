"""hfremote/_packing.py and the entry script: what travels to the job, what gets installed there, how it runs."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import pickle
import re
import shutil
import subprocess
import sys
import threading
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import hfremote
import hfremote._calls
import hfremote._packing as packing
from hfremote import OptionsError, PicklingError
from hfremote._calls import pack_call
from hfremote._entry import read_results
from hfremote._options import LOCAL_PYTHON
from hfremote._packing import Scan, check_function, pack_function, pinned_dependencies, render_entry

if sys.version_info >= (3, 11):
    import tomllib
else:  # the project supports 3.10, whose standard library has no TOML parser
    tomllib = pytest.importorskip("tomli")

ENTRY = Path(hfremote.__file__).with_name("_entry.py")
MSGSPEC = f"msgspec=={importlib.metadata.version('msgspec')}"


# -- local modules ---------------------------------------------------------------------------------------


@pytest.fixture
def make_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], types.ModuleType]]:
    """Write a module with a unique name into a folder on sys.path and import it; forgotten afterwards."""
    folder = tmp_path / "user-code"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    made: list[str] = []

    def make(stem: str, source: str) -> types.ModuleType:
        (folder / f"{stem}.py").write_text(source)
        importlib.invalidate_caches()
        made.append(stem)
        return importlib.import_module(stem)

    yield make
    for name in made:
        sys.modules.pop(name, None)


def unique(stem: str) -> str:
    return f"{stem}_{uuid.uuid4().hex[:8]}"


def test_scan_ships_local_modules_but_not_installed_ones(make_module: Callable[[str, str], types.ModuleType]) -> None:
    helper = unique("helper")
    make_module(helper, "def double(x):\n    return 2 * x\n")
    user = unique("user")
    module = make_module(
        user,
        f"import json\nimport msgspec\nimport {helper}\n\n"
        f"def fn(x):\n    return {helper}.double(x) + len(json.dumps(msgspec.json.encode(x).decode()))\n",
    )
    scan = Scan(module.fn)
    assert set(scan.local) == {user, helper}
    assert scan.local[helper] is sys.modules[helper]
    assert {"msgspec", "json"} <= scan.imports
    assert not {"json", "msgspec", "hfremote", "cloudpickle"} & set(scan.local)


def test_scan_follows_functions_and_classes_of_local_modules(
    make_module: Callable[[str, str], types.ModuleType],
) -> None:
    deep = unique("deep")
    make_module(deep, "import msgspec\n\nclass Point(msgspec.Struct):\n    x: int\n")
    middle = unique("middle")
    make_module(middle, f"from {deep} import Point\n\ndef make(x):\n    return Point(x)\n")
    user = unique("user")
    module = make_module(user, f"from {middle} import make\n\ndef fn(x):\n    return make(x).x\n")
    scan = Scan(module.fn)
    assert {user, middle, deep} <= set(scan.local)
    assert "msgspec" in scan.imports  # Point travels by value, and the job must import its base class
    assert pinned_dependencies(scan, []) == [MSGSPEC]


def test_scan_sees_class_attributes_and_survives_cycles(make_module: Callable[[str, str], types.ModuleType]) -> None:
    user = unique("user")
    module = make_module(
        user,
        "import msgspec\n\nLOOP = []\nLOOP.append(LOOP)\n\n"
        "class Codec:\n    encoder = msgspec.json.Encoder()\n\n    @property\n    def size(self):\n        return 1\n\n"
        "def fn(x):\n    return Codec.encoder.encode(x), LOOP\n",
    )
    scan = Scan(module.fn)
    assert user in scan.local
    assert pinned_dependencies(scan, []) == [MSGSPEC]


def test_scan_ignores_stdlib_and_site_packages_values() -> None:
    import json

    import msgspec

    def fn(x: Any) -> Any:
        return json.dumps(x), msgspec.json.encode(x), threading.get_ident()

    scan = Scan(fn)
    assert not {"json", "msgspec", "threading"} & set(scan.local)
    assert {"json", "msgspec", "threading"} <= scan.imports
    assert __name__ in scan.local  # this test module is the user's own code


def test_a_third_party_import_is_pinned_to_the_installed_version() -> None:
    def fn(x: Any) -> bytes:
        import msgspec

        return msgspec.json.encode(x)

    assert pinned_dependencies(Scan(fn), []) == [MSGSPEC]


def test_a_module_level_third_party_import_is_pinned_too(make_module: Callable[[str, str], types.ModuleType]) -> None:
    user = unique("user")
    module = make_module(user, "import json\nimport msgspec\n\ndef fn(x):\n    return msgspec.json.encode(x)\n")
    assert pinned_dependencies(Scan(module.fn), []) == [MSGSPEC]


def test_explicit_dependencies_win_over_detection() -> None:
    def fn(x: Any) -> bytes:
        import msgspec

        return msgspec.json.encode(x)

    assert pinned_dependencies(Scan(fn), ["MsgSpec>=0.18"]) == ["MsgSpec>=0.18"]
    assert pinned_dependencies(Scan(fn), ["httpx"]) == ["httpx", MSGSPEC]


def test_cloudpickle_hfremote_stdlib_and_unknown_imports_are_never_listed() -> None:
    def fn(x: Any) -> Any:
        import json
        import os.path

        import cloudpickle
        import not_a_real_module_anywhere  # type: ignore[import-not-found]  # noqa: F401

        import hfremote

        return cloudpickle, json, os.path, hfremote

    scan = Scan(fn)
    assert {"cloudpickle", "json", "os", "hfremote", "not_a_real_module_anywhere"} <= scan.imports
    assert pinned_dependencies(scan, []) == []
    assert pinned_dependencies(scan, ["cloudpickle"]) == ["cloudpickle"]  # explicit is kept as written


# -- the entry script's header -----------------------------------------------------------------------------

_PEP723 = re.compile(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$")


def script_metadata(script: str) -> dict[str, Any]:
    """The PEP 723 block, parsed as the reference implementation in the PEP does."""
    blocks = [m for m in _PEP723.finditer(script) if m.group("type") == "script"]
    assert len(blocks) == 1
    content = "".join(
        line[2:] if line.startswith("# ") else line[1:] for line in blocks[0].group("content").splitlines(keepends=True)
    )
    meta: dict[str, Any] = tomllib.loads(content)
    return meta


def test_render_entry_has_a_valid_pep723_header() -> None:
    deps = ["msgspec==0.19.0", 'numpy>=2; python_version >= "3.10"', "torch[cuda]>=2.3"]
    script = render_entry(LOCAL_PYTHON, deps)
    meta = script_metadata(script)
    assert meta == {
        "requires-python": f"=={LOCAL_PYTHON}.*",
        "dependencies": [f"cloudpickle=={cloudpickle.__version__}", *deps],
    }
    assert script.startswith("# /// script\n")
    assert script.endswith(ENTRY.read_text(encoding="utf-8"))
    compile(script, "entry.py", "exec")


def test_render_entry_without_dependencies_still_pins_cloudpickle() -> None:
    meta = script_metadata(render_entry("3.12", []))
    assert meta["requires-python"] == "==3.12.*"
    assert meta["dependencies"] == [f"cloudpickle=={cloudpickle.__version__}"]


# -- checks before anything travels ------------------------------------------------------------------------


def test_check_function_refuses_generators() -> None:
    def gen() -> Iterator[int]:
        yield 1

    async def coro() -> int:
        return 1

    async def agen() -> Any:
        yield 1

    for fn, word in ((gen, "generator"), (agen, "generator"), (42, "function")):
        with pytest.raises(OptionsError, match=word):
            check_function(fn)  # type: ignore[arg-type]
    check_function(len)  # builtins are callables too
    check_function(lambda: 1)
    check_function(coro)  # runs on an event loop in the job
    with pytest.raises(OptionsError, match="async: a scheduled function must be a plain"):
        check_function(coro, allow_async=False)


_LOCK = threading.Lock()


def uses_lock() -> int:
    with _LOCK:
        return 1


def add(x: int, y: int = 0) -> int:
    return x + y


def test_pack_function_names_the_unpicklable_global() -> None:
    with pytest.raises(PicklingError, match=r"uses '_LOCK' \(lock\)"):
        pack_function(uses_lock, Scan(uses_lock))
    assert packing.__name__ not in cloudpickle.list_registry_pickle_by_value()
    assert __name__ not in cloudpickle.list_registry_pickle_by_value()  # registrations are undone


def test_pack_call_checks_arguments_like_a_call(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cloudpickle.loads(pack_call(add, (1,), {"y": 2})) == ((1,), {"y": 2})
    with pytest.raises(TypeError, match="add"):
        pack_call(add, (1, 2, 3), {})
    with pytest.raises(TypeError, match="'x'"):
        pack_call(add, (), {"y": 1})
    with pytest.raises(PicklingError, match="argument 'y' of add"):
        pack_call(add, (1,), {"y": threading.Lock()})
    monkeypatch.setattr(hfremote._calls, "MAX_CALL_BYTES", 100)
    with pytest.raises(OptionsError, match="limit"):
        pack_call(add, ("x" * 1000,), {})


# -- the entry script, run as the job runs it ---------------------------------------------------------------


def twice(x: int, *, extra: int = 0) -> dict[str, int]:
    return {"value": 2 * x + extra}


def fails(message: str) -> None:
    raise ValueError(message)


def returns_a_lock() -> Any:
    return threading.Lock()


def make_run(
    folder: Path, fn: Callable[..., Any], calls: list[tuple[tuple[Any, ...], dict[str, Any]]], **manifest: Any
) -> Path:
    """A run folder as the client uploads it: shared/{entry.py, manifest.json, function.pkl} and
    chunks/<i>/inputs.pkl, chunk i holding input i."""
    (folder / "shared").mkdir(parents=True)
    shutil.copy(ENTRY, folder / "shared" / "entry.py")
    scan = Scan(fn)
    (folder / "shared" / "manifest.json").write_text(
        json.dumps(
            {
                "python": LOCAL_PYTHON,
                "cloudpickle": cloudpickle.__version__,
                "function": f"{fn.__module__}.{fn.__qualname__}",
                "dependencies": pinned_dependencies(scan, []),
                "calls": len(calls),
                **manifest,
            }
        )
    )
    (folder / "shared" / "function.pkl").write_bytes(pack_function(fn, scan))
    for i, (args, kwargs) in enumerate(calls):
        (folder / "chunks" / str(i)).mkdir(parents=True)
        (folder / "chunks" / str(i) / "inputs.pkl").write_bytes(cloudpickle.dumps([(i, pack_call(fn, args, kwargs))]))
    return folder


def run_entry(folder: Path, *calls: str) -> subprocess.CompletedProcess[str]:
    """`python entry.py CHUNK` for each chunk, from elsewhere, so nothing of this checkout is importable but
    the run folder; the last one that failed (or the last one)."""
    done = []
    for call in calls:
        done.append(
            subprocess.run(
                [sys.executable, "-I", str(folder / "shared" / "entry.py"), str(folder / "chunks" / call)],
                cwd=folder.parent,
                capture_output=True,
                text=True,
                timeout=60,
            )
        )
    return next((d for d in done if d.returncode != 0), done[-1])


def result(folder: Path, call: str) -> dict[str, Any]:
    """The payload of input `call`, from the result file of the chunk of the same number."""
    chunk, _ = read_results((folder / "chunks" / call / "results.pkl").read_bytes())
    assert list(chunk) == [int(call)]
    payload: dict[str, Any] = cloudpickle.loads(chunk[int(call)])
    return payload


def test_entry_writes_each_calls_value(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", twice, [((3,), {}), ((5,), {"extra": 1})])
    done = run_entry(run, "0", "1")
    assert done.returncode == 0, done.stderr
    assert result(run, "0") == {"ok": True, "value": {"value": 6}}
    assert result(run, "1") == {"ok": True, "value": {"value": 11}}
    for call in ("0", "1"):  # no temporary files left
        assert sorted(p.name for p in (run / "chunks" / call).iterdir()) == ["inputs.pkl", "results.pkl"]


def test_entry_writes_the_exception_and_its_traceback(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", fails, [(("boom",), {})])
    done = run_entry(run, "0")
    assert done.returncode == 1
    assert "ValueError: boom" in done.stdout  # the job writes its stderr through its stdout, in order
    payload = result(run, "0")
    assert payload["ok"] is False
    assert isinstance(payload["error"], ValueError)
    assert str(payload["error"]) == "boom"
    assert (payload["type"], payload["message"]) == ("builtins.ValueError", "boom")
    assert "in fails" in payload["traceback"]
    assert "ValueError: boom" in payload["traceback"]


def test_entry_reports_a_result_that_cannot_travel(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", returns_a_lock, [((), {})])
    done = run_entry(run, "0")
    payload = result(run, "0")
    assert payload["ok"] is False
    assert payload["type"] == "hfremote.errors.PicklingError"
    assert "cannot be pickled" in payload["message"]
    assert done.returncode == 0  # the function itself returned


@pytest.mark.parametrize(
    ("manifest", "words"),
    [
        ({"python": "2.7"}, ("Python 2.7", f"Python {LOCAL_PYTHON}", "same version")),
        ({"cloudpickle": "0.0.1"}, (f"cloudpickle {cloudpickle.__version__}", "caller has 0.0.1")),
    ],
    ids=["python", "cloudpickle"],
)
def test_entry_refuses_a_mismatched_environment(tmp_path: Path, manifest: dict[str, str], words: tuple[str]) -> None:
    run = make_run(tmp_path / "run", twice, [((1,), {}), ((2,), {})], **manifest)
    done = run_entry(run, "0", "1")
    assert done.returncode == 2
    assert done.stdout.startswith("hfremote: ")  # (its stderr goes through its stdout)
    for word in words:
        assert word in done.stdout
    for call in ("0", "1"):
        payload = result(run, call)
        assert payload["ok"] is False
        assert payload["type"] == "hfremote.errors.JobFailedError"
        assert all(word in payload["message"] for word in words)


def test_entry_ships_local_modules_the_function_uses(
    tmp_path: Path, make_module: Callable[[str, str], types.ModuleType]
) -> None:
    helper = unique("helper")
    make_module(helper, "FACTOR = 7\n\ndef scale(x):\n    return FACTOR * x\n")
    user = unique("user")
    module = make_module(user, f"import {helper}\n\ndef fn(x):\n    return {helper}.scale(x)\n")
    run = make_run(tmp_path / "run", module.fn, [((6,), {})])
    done = run_entry(run, "0")  # the job cannot import either module: they travel inside function.pkl
    assert done.returncode == 0, done.stderr
    assert result(run, "0") == {"ok": True, "value": 42}


def test_entry_runs_a_function_that_imports_a_local_module_in_its_body(
    tmp_path: Path, make_module: Callable[[str, str], types.ModuleType]
) -> None:
    helper = unique("helper")
    make_module(helper, "def scale(x):\n    return 7 * x\n")
    user = unique("user")
    module = make_module(user, f"def fn(x):\n    import {helper}\n\n    return {helper}.scale(x)\n")
    run = make_run(tmp_path / "run", module.fn, [((6,), {})])
    done = run_entry(run, "0")
    assert result(run, "0") == {"ok": True, "value": 42}, done.stderr


def test_entry_appends_one_record_per_input_and_a_rerun_keeps_them(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", twice, [])
    calls = [(i, pack_call(twice, (i,), {})) for i in range(5)]
    (run / "chunks" / "c").mkdir(parents=True)
    (run / "chunks" / "c" / "inputs.pkl").write_bytes(cloudpickle.dumps(calls))
    # What a killed first attempt leaves: inputs 0 and 1 done, input 2 cut short while being written.
    kept = cloudpickle.dumps({"ok": True, "value": "from the first attempt"})
    records = [pickle.dumps((i, kept)) for i in (0, 1)]
    (run / "chunks" / "c" / "results.pkl").write_bytes(b"".join(records) + pickle.dumps((2, kept))[:-3])
    done = run_entry(run, "c")
    assert done.returncode == 0, done.stderr
    data = (run / "chunks" / "c" / "results.pkl").read_bytes()
    outcomes, good = read_results(data)
    assert good == len(data)  # the cut record is gone: nothing hides the records after it
    assert {i: cloudpickle.loads(p)["value"] for i, p in outcomes.items()} == {
        0: "from the first attempt",
        1: "from the first attempt",
        2: {"value": 4},
        3: {"value": 6},
        4: {"value": 8},
    }


def test_results_reader_takes_the_last_record_of_an_input_and_stops_at_a_cut(tmp_path: Path) -> None:
    data = pickle.dumps((0, b"a")) + pickle.dumps((1, b"b")) + pickle.dumps((0, b"c"))
    assert read_results(data) == ({0: b"c", 1: b"b"}, len(data))
    cut = data + pickle.dumps((2, b"d"))[:5]
    assert read_results(cut) == ({0: b"c", 1: b"b"}, len(data))
    assert read_results(b"") == ({}, 0)
    old = cloudpickle.dumps({3: b"x", 4: b"y"})  # a result file written by hfremote 0.1
    assert read_results(old) == ({3: b"x", 4: b"y"}, len(old))


def _helper_a() -> int:
    return 1


def _uses_helper() -> int:
    def inner() -> int:
        return _helper_a()

    return inner()


def test_remote_frames_point_back_at_the_callers_source() -> None:
    from hfremote._future import localize

    files = Scan(_uses_helper).code_files
    here = str(Path(__file__))
    assert files["_uses_helper"] == files["inner"] == files["_helper_a"] == here
    line = _helper_a.__code__.co_firstlineno + 1
    text = (
        "Traceback (most recent call last):\n"
        '  File "/job/entry.py", line 9, in main\n'
        f'  File "<dynamic-code>", line {line}, in _helper_a\n'
        '  File "<dynamic-code>", line 3, in not_shipped\n'
        "ValueError: x\n"
    )
    assert localize(text, files) == (
        "Traceback (most recent call last):\n"
        '  File "/job/entry.py", line 9, in main\n'
        f'  File "{here}", line {line}, in _helper_a\n'
        "    return 1\n"
        '  File "<dynamic-code>", line 3, in not_shipped\n'  # a name of no file known here: left as it was
        "ValueError: x\n"
    )


def test_entry_says_what_to_do_when_an_arguments_package_is_missing(tmp_path: Path, make_module: Any) -> None:
    from hfremote._calls import Packer, write_chunk
    from hfremote._origins import Rules

    stem = unique("pinned_only")
    module = make_module(stem, "class Thing:\n    pass\n")
    run = make_run(tmp_path / "run", twice, [])
    packer = Packer(twice, Rules(pin=[stem]))  # pickled by reference, as an installed package's class is
    (run / "chunks" / "0").mkdir(parents=True)
    with open(run / "chunks" / "0" / "inputs.pkl", "wb") as out:
        write_chunk([(0, packer.pack((module.Thing(),), {}))], out)
    done = run_entry(run, "0")
    assert done.returncode == 1
    error = result(run, "0")["error"]
    assert isinstance(error, ModuleNotFoundError)
    assert any("dependencies=[...]" in note for note in error.__notes__)
    assert "dependencies=[...]" in done.stdout  # (the job's stderr goes to its stdout, to keep the order)
