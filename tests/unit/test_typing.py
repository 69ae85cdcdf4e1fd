"""The public API's static types: tests/typing/test_types.py passes `mypy --strict`, and a wrong call fails it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache of our own: other mypy runs in the checkout are left alone."""
    return tmp_path_factory.mktemp("mypy-cache")


def mypy(target: Path, cache_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--cache-dir", str(cache_dir), str(target)],
        cwd=ROOT,  # picks up the project's mypy settings; hfremote is importable from here
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_remote_types_check_strictly(cache_dir: Path) -> None:
    done = mypy(ROOT / "tests" / "typing" / "test_types.py", cache_dir)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ('f.submit("wrong")', 'incompatible type "str"; expected "int"'),
        ('f("wrong")', 'incompatible type "str"; expected "int"'),
        ("f.submit(1, 2)", "Too many arguments"),
        ("n: int = f(1)", 'Incompatible types in assignment (expression has type "str"'),
        ("n: int = f.submit(1).result()", 'Incompatible types in assignment (expression has type "str"'),
    ],
    ids=["submit-arg", "call-arg", "submit-arity", "call-result", "future-result"],
)
def test_wrong_use_fails_type_checking(tmp_path: Path, cache_dir: Path, call: str, message: str) -> None:
    source = tmp_path / "wrong.py"
    source.write_text(
        "from hfremote import remote\n\n\n"
        '@remote(flavor="cpu-basic")\n'
        "def f(x: int) -> str:\n"
        "    return str(x)\n\n\n"
        f"{call}\n"
    )
    done = mypy(source, cache_dir)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "wrong.py:9: error:" in done.stdout
    assert message in done.stdout


@pytest.mark.parametrize(
    ("use", "message"),
    [
        ("n: int = await f.aio(1)", 'Incompatible types in assignment (expression has type "str"'),
        ('await f.aio("wrong")', 'incompatible type "str"; expected "int"'),
        ("n: int = f(1)", 'Incompatible types in assignment (expression has type "str"'),
        ("s: str = f.local(1)", 'expression has type "Coroutine[Any, Any, str]"'),
        ("n: int = await f.submit.aio(1)", 'expression has type "RemoteFuture[str]"'),
        ("async for n in f.map.aio([1]):\n        m: int = n", 'expression has type "str"'),
    ],
    ids=["aio-result", "aio-arg", "call-result", "local-is-the-coroutine", "submit-aio-result", "map-aio-item"],
)
def test_wrong_use_of_an_async_function_fails_type_checking(
    tmp_path: Path, cache_dir: Path, use: str, message: str
) -> None:
    source = tmp_path / "wrong_async.py"
    source.write_text(
        "from hfremote import remote\n\n\n"
        '@remote(flavor="cpu-basic")\n'
        "async def f(x: int) -> str:\n"
        "    return str(x)\n\n\n"
        "async def main() -> None:\n"
        f"    {use}\n"
    )
    done = mypy(source, cache_dir)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "wrong_async.py:1" in done.stdout
    assert message in done.stdout, done.stdout
