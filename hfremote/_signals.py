"""SIGTERM handled like Ctrl-C: the jobs this process started are cancelled before it ends.

A batch scheduler's stop, `kill`, a container runtime's shutdown: without this, the default action ends
the process at once and its jobs go on billing until their lease runs out. Standard library only, so
setting it up when hfremote is imported costs nothing; the engine is looked at only when the signal comes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from types import FrameType

_installed: list[bool] = []


def _on_term(signum: int, frame: FrameType | None) -> None:
    engine_module = sys.modules.get("hfremote._engine")  # not imported: this process started no job
    count = engine_module.cancel_everything() if engine_module is not None else 0
    if count:
        os.write(2, f"\nhfremote: terminated; cancelled {count} unfinished job(s)\n".encode())
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)  # then end as the signal would have


def install_sigterm() -> None:
    """Set the handler, unless the program handles SIGTERM itself.

    Signal handlers can only be set from the main thread: this is tried when hfremote is imported (from
    the main thread, as a rule) and again whenever the main thread uses the engine, so jobs started
    from a worker thread are covered too."""
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    with contextlib.suppress(ValueError, OSError):
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_term)
        _installed.append(True)
