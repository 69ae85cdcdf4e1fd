"""What travels to the job, in the environments ML engineers really have (real interpreters, real uv).

- `uv run --with numpy script.py`: numpy lives in an overlay added by a `.pth` file, outside the
  interpreter's site-packages; it must be installed in the job, not shipped by value. A function that
  only receives an ndarray (and never imports numpy) needs numpy in the job too.
- A PYTHONPATH folder of the user's own modules: they travel by value.
- A package installed editable (`pip install -e`) and one installed from a local folder
  (`pip install ./acme`): no index has them, so they travel by value, with their own dependencies
  installed in the job.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
from helpers import subprocess_env

from hfremote.emulator import Emulator

ROOT = Path(__file__).resolve().parents[2]
UV = shutil.which("uv") or "uv"


def run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> str:
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_uv_run_with_numpy_and_a_pythonpath_folder(emulator: Emulator, tmp_path: Path) -> None:
    folder = tmp_path / "shared-code"
    folder.mkdir()
    (folder / "pp_helper.py").write_text("def scale(x):\n    return 10 * x\n")
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            import numpy as np
            import pp_helper
            from hfremote import remote

            @remote(stream_logs=False)
            def total(a):  # numpy only through its argument
                return float(a.sum())

            @remote(stream_logs=False)
            def mean_of(n):
                return float(np.arange(n).mean())

            @remote(stream_logs=False)
            def scaled(x):
                return pp_helper.scale(x)

            print("total", total(np.arange(5)))
            print("map", list(total.map(np.arange(i) for i in (3, 4))))
            print("mean", mean_of(5))
            print("scaled", scaled(4))
            """
        )
    )
    env = subprocess_env(emulator, tmp_path / "hf-home")
    env["PYTHONPATH"] = str(folder)
    env.pop("VIRTUAL_ENV", None)
    out = run([UV, "run", "--project", str(ROOT), "--with", "numpy", "python", str(script)], env, tmp_path)
    assert "total 10.0" in out
    assert "map [3.0, 6.0]" in out  # a map's inputs are looked at too, lazily made as they are
    assert "mean 2.0" in out
    assert "scaled 40" in out


def _package(root: Path, name: str, body: str, requires: list[str]) -> Path:
    folder = root / name
    (folder / name).mkdir(parents=True)
    (folder / name / "__init__.py").write_text(body)
    deps = ", ".join(f'"{r}"' for r in requires)
    (folder / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [project]
            name = "{name.replace("_", "-")}"
            version = "0.3.0"
            dependencies = [{deps}]

            [build-system]
            requires = ["hatchling"]
            build-backend = "hatchling.build"
            """
        )
    )
    return folder


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    """A fresh virtual environment that sees hfremote (and its dependencies) through a `.pth` file, as
    a uv overlay does; packages are installed into it with `uv pip`."""
    home = tmp_path / "venv"
    subprocess.run([UV, "venv", "--quiet", "--python", sys.executable, str(home)], check=True, timeout=120)
    purelib = Path(sysconfig.get_paths()["purelib"])
    site = next((home / "lib").glob("python*/site-packages"))
    (site / "project_env.pth").write_text(f"{purelib}\n{ROOT}\n")
    return home


def test_editable_and_local_path_installs_travel_by_value(emulator: Emulator, tmp_path: Path, venv: Path) -> None:
    # Names no index has: pinning them would fail in the job ("not found in the package registry").
    editable = _package(tmp_path / "src", "acme_edit_hfr", "def double(x):\n    return 2 * x\n", ["msgspec"])
    local = _package(
        tmp_path / "src",
        "acme_local_hfr",
        "import msgspec\n\ndef encode(x):\n    return msgspec.json.encode(x).decode()\n",
        ["msgspec"],
    )
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    run([UV, "pip", "install", "--quiet", "--python", python, "-e", str(editable)], env, tmp_path)
    run([UV, "pip", "install", "--quiet", "--python", python, str(local)], env, tmp_path)
    shutil.rmtree(local)  # installed from a folder that may be gone: the installed copy travels
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            """
            import acme_edit_hfr
            from acme_local_hfr import encode
            from hfremote import remote

            @remote(stream_logs=False)
            def both(x):
                return encode({"v": acme_edit_hfr.double(x)})

            print("result", both(21))
            """
        )
    )
    out = run([python, str(script)], {**subprocess_env(emulator, tmp_path / "hf-home")}, tmp_path)
    assert 'result {"v":42}' in out
