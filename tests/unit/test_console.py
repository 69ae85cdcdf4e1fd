"""What a call prints: job lines, live lines, control characters, tracebacks, costs; and the CLI's argument parsing."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from hfremote._cli_args import parse_call
from hfremote._console import (
    SETUP_LINE,
    Console,
    _setup_note,
    clean_traceback,
    format_cost,
    neutralise,
    strip_entry_frames,
)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_control_characters_are_neutralised() -> None:
    assert neutralise("\x1b[31mred\x1b[0m\x00\x07tab\tok é") == "\\x1b[31mred\\x1b[0m\\x00\\x07tab\tok é"
    out, err = io.StringIO(), io.StringIO()
    Console(out=out, err=err).job_line("\x1b]0;title\x07hi")
    assert out.getvalue() == "\\x1b]0;title\\x07hi\n"
    raw = io.StringIO()
    Console(raw=True, out=raw, err=err).job_line("\x1b[1mbold")
    assert raw.getvalue() == "\x1b[1mbold\n"


def test_carriage_return_updates_keep_only_the_last_state_off_a_terminal() -> None:
    out = io.StringIO()
    console = Console(out=out, err=io.StringIO())
    console.job_line("\r0%\r10%\r100%")  # a platform that splits only on newlines: one line of updates
    console.job_line("plain\r")  # a CRLF line end is an ordinary line
    console.job_line("\r10%")  # updates, one per line, as the entry script writes them
    console.job_line("\r50%")
    console.job_line("done")
    console.job_line("\r99%")  # the last state before the end
    console.close()
    assert out.getvalue() == "100%\nplain\n50%\ndone\n99%\n"


def test_carriage_return_updates_are_a_live_line_on_a_terminal() -> None:
    out = Tty()
    err = Tty()
    console = Console(out=out, err=err)
    console.job_line("\r10%")
    console.job_line("\r20%")
    console.note("a note")  # ends the live line first
    console.job_line("\r30%")
    console.job_line("finished")
    assert out.getvalue() == "\r10%\x1b[K\r20%\x1b[K\n\r30%\x1b[K\nfinished\n"
    assert err.getvalue() == "hfremote: a note\n"


def test_the_job_ends_a_line_at_each_carriage_return_update() -> None:
    from hfremote._entry import _Updates

    sink = io.StringIO()
    stream = _Updates(sink)
    for i in range(3):
        stream.write(f"\r{i}/2")  # what tqdm writes
    stream.write("\n")
    stream.write("line\r\n")  # CRLF stays one line end
    stream.write("a")
    stream.write("\r")
    stream.write("\n")
    stream.write("x\ry\n")
    assert sink.getvalue().split("\n") == ["\r0/2", "\r1/2", "\r2/2", "line\r", "a", "\r", "x", "\ry", ""]


def test_a_held_traceback_is_dropped_or_printed() -> None:
    block = ["Traceback (most recent call last):", '  File "x.py", line 1, in f', "    boom()", "ValueError: x"]
    out = io.StringIO()
    console = Console(out=out, err=io.StringIO())
    for line in ["before", *block]:
        console.job_line(line, hold_traceback=True)
    console.release_held(drop=True)
    assert out.getvalue() == "before\n"
    out = io.StringIO()
    console = Console(out=out, err=io.StringIO())
    for line in [*block, "after"]:  # a traceback followed by more output is the job's own: printed
        console.job_line(line, hold_traceback=True)
    console.release_held(drop=True)
    assert out.getvalue() == "\n".join([*block, "after"]) + "\n"


def test_entry_frames_are_stripped() -> None:
    text = (
        "Traceback (most recent call last):\n"
        '  File "/hfremote/run/entry.py", line 257, in main\n'
        '    payload = {"ok": True, "value": function(*args, **kwargs)}\n'
        "                                    ^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        '  File "/home/me/train.py", line 3, in train\n'
        "    raise ValueError('x')\n"
        "ValueError: x\n"
    )
    assert strip_entry_frames(text) == (
        "Traceback (most recent call last):\n"
        '  File "/home/me/train.py", line 3, in train\n'
        "    raise ValueError('x')\n"
        "ValueError: x\n"
    )


def test_clean_traceback_hides_hfremote_frames() -> None:
    import hfremote._console as console_module

    def user() -> None:
        exec(compile("raise KeyError('k')", console_module.__file__, "exec"))

    try:
        user()
    except KeyError as e:
        text = clean_traceback(e)
    assert "in user" in text and "hfremote/_console.py" not in text and text.endswith("KeyError: 'k'\n")


@pytest.mark.parametrize(
    ("usd", "shown"),
    [
        (0.0, "$0"),
        (0.0000024, "<$0.0001"),
        (0.00024, "$0.00024"),
        (0.0031, "$0.0031"),
        (0.5, "$0.50"),
        (1234.5, "$1,234.50"),
    ],
)
def test_costs_are_rounded_for_people(usd: float, shown: str) -> None:
    assert format_cost(usd) == shown


def test_arguments_from_the_signature() -> None:
    def f(
        lr: float,
        /,
        epochs: int = 2,
        tags: list[str] | None = None,
        fp16: bool = False,
        mode: Literal["a", "b"] = "a",
        out: Path = Path("x"),
        name="n",
    ) -> None: ...

    args, kwargs = parse_call(f, ["--lr", "1e-3", "--tags", "x", "y", "--fp16", "--mode", "b", "--out", "o"], "prog")
    assert args == (1e-3,)
    assert kwargs == {"epochs": 2, "tags": ["x", "y"], "fp16": True, "mode": "b", "out": Path("o"), "name": "n"}
    with pytest.raises(SystemExit):
        parse_call(f, ["--epochs", "3"], "prog")  # --lr is required
    with pytest.raises(SystemExit):
        parse_call(f, ["--lr", "1", "--mode", "c"], "prog")


def test_importing_hfremote_in_a_notebook_without_ipywidgets_warns_nothing() -> None:
    code = """
import sys, types, warnings
warnings.simplefilter("error")
shell = type("ZMQInteractiveShell", (), {})()
sys.modules["ipykernel"] = types.ModuleType("ipykernel")
sys.modules["ipykernel.zmqshell"] = types.ModuleType("ipykernel.zmqshell")
ipython = types.ModuleType("IPython")
ipython.get_ipython = lambda: shell
sys.modules["IPython"] = ipython
import hfremote
hfremote.remote
from hfremote._console import progress_bar, progress_default
assert progress_default()
bar = progress_bar(total=2)
print(type(bar).__module__)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "tqdm.std"


def test_uv_set_up_lines_become_a_short_summary() -> None:
    for line in (
        "Installed 57 packages in 41.2s",
        "Installed 1 package in 2ms",
        "Downloading torch (846.0MiB)",
        "Downloaded torch",
        "Resolved 12 packages in 310ms",
        "Uninstalled 2 packages in 5ms",
    ):
        assert SETUP_LINE.match(line), line
    for line in ("Installed the model", "hello", "Downloading the dataset now", "Traceback (most recent call last):"):
        assert not SETUP_LINE.match(line), line
    assert _setup_note("Installed 57 packages in 41.2s") == "dependencies: installed 57 packages in 41.2s"
    assert _setup_note("Downloading torch (846.0MiB)") == "dependencies: downloading torch (846.0MiB)"
