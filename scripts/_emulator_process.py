"""An `hfremote emulator` in a process of its own, for the scripts that run a peer's test suite against it
(a suite that reaps its child processes, or starts servers of its own, cannot share our process)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def start_emulator(state_dir: Path, options: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start it on a free port with `options` (`--token`, `--user`, ...); the process and its address."""
    command = [str(Path(sys.executable).with_name("hfremote")), "emulator", "--port", "0"]
    command += ["--state-dir", str(state_dir), *options]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "hfremote emulator serving on http://127.0.0.1:PORT (...)"
    match = re.search(r"serving on (\S+)", line)
    if match is None:
        proc.kill()
        raise SystemExit(f"the emulator did not start: {line!r}")
    return proc, match.group(1)
