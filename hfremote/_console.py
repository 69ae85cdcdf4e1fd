"""What a call shows while it runs: the job's output, hfremote's own notes, a failure once.

The platform's log lines do not say which stream they came from (huggingface_hub's `fetch_job_logs`
yields each SSE event's `data` and drops its `timestamp`; there is no stream field), so the job's
lines go to local stdout, where a program's output belongs (`python train.py > out.txt` keeps them),
and hfremote's notes, stage changes and errors to stderr. The job writes both of its streams through
one pipe (see `_entry.py`), so their lines keep the order they were printed in.

A line that starts with a carriage return is an update of the line before (a progress bar: the job's
entry script ends a line at each carriage return, since the platform splits lines only at newlines):
on a terminal it is drawn over the last one as a live line; elsewhere only the final state is kept. Control
characters (ANSI escapes, NULs, bells) are shown as visible escapes unless raw output is asked for.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

# C0 controls but tab, DEL, and C1 controls: what a terminal would act on instead of showing.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_PACKAGE = str(Path(__file__).resolve().parent)
# What `uv run` prints while it sets the job's environment up, before the function's first line.
SETUP_LINE = re.compile(
    r"^(?:(?:Installed|Uninstalled|Resolved|Prepared|Audited|Built|Bytecode compiled) \d+ packages?(?: in [\d.]+m?s)?"
    r"|Using (?:CPython|Python) .*|Downloading \S+(?: \(.*\))?|Downloaded \S+|Building \S+.*|Built \S+.*"
    r"|Reading inline script metadata from .*|Creating virtual environment.*)$"
)
_HIDDEN_FILES = (_PACKAGE, str(Path(threading.__file__).resolve().parent / "concurrent"))


def raw_output() -> bool:
    """HFREMOTE_RAW_OUTPUT=1 (or `hfremote run --raw`): the job's control characters reach the terminal as they are."""
    return os.environ.get("HFREMOTE_RAW_OUTPUT", "") not in ("", "0", "false", "no")


def neutralise(text: str) -> str:
    """Control characters made visible and harmless: ESC[31m shows as \\x1b[31m and colours nothing."""
    return _CONTROL.sub(lambda m: repr(m.group(0))[1:-1], text)


class Console:
    """One writer for a call's output: job lines on stdout, notes on stderr, one live line at most."""

    def __init__(self, raw: bool = False, out: IO[str] | None = None, err: IO[str] | None = None) -> None:
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.raw = raw or raw_output()
        self.live = _isatty(self.out)
        self._lock = threading.RLock()
        self._shown = False  # a live line (updated by carriage returns) is on the terminal
        self._pending: str | None = None  # off a terminal: the last update, printed when its line ends
        self._held: list[str] = []  # a traceback block, held until it is known whether the failure shows it
        self._held_done = False

    # -- job lines -----------------------------------------------------------------------------------
    def job_lines(self, lines: Iterable[str], prefix: str = "", hold_tracebacks: bool = False) -> None:
        for line in lines:
            self.job_line(line, prefix, hold_tracebacks)

    def job_line(self, line: str, prefix: str = "", hold_traceback: bool = False) -> None:
        line = line.rstrip("\r")  # a CRLF line end
        update = line.startswith("\r")
        # Several updates in one line (output the entry script did not see, e.g. a subprocess's): the last wins.
        text = line.rsplit("\r", 1)[-1]
        if not self.raw:
            text = neutralise(text)
        with self._lock:
            if hold_traceback and self._held and not self._held_done:
                self._held.append(prefix + text)
                # the exception's own line (not indented) ends the block
                self._held_done = bool(text) and not text.startswith((" ", "\t", "Traceback"))
                return
            if hold_traceback and text.startswith("Traceback (most recent call last):"):
                self._flush_held()
                self._held, self._held_done = [prefix + text], False
                return
            self._flush_held()
            if update:
                if self.live:
                    self.out.write("\r" + prefix + text + "\x1b[K")
                    self.out.flush()
                    self._shown = True
                else:  # not a terminal: only the final state is kept, printed when the next line comes
                    self._pending = prefix + text if text else None
                return
            self._end_live()
            self.out.write(prefix + text + "\n")
            self.out.flush()

    def release_held(self, drop: bool) -> None:
        """The held traceback block: dropped (the failure raised shows it) or printed after all."""
        with self._lock:
            if drop:
                self._held.clear()
            self._flush_held()

    def _flush_held(self) -> None:
        if self._held:
            self._end_live()
            self.out.write("".join(line + "\n" for line in self._held))
            self.out.flush()
            self._held.clear()

    def _end_live(self) -> None:
        if self._shown:
            self.out.write("\n")
            self._shown = False
        if self._pending is not None:
            self.out.write(self._pending + "\n")
            self._pending = None

    # -- notes ---------------------------------------------------------------------------------------
    def note(self, text: str) -> None:
        """One line of hfremote's own, on stderr."""
        with self._lock:
            if self._shown and _same_terminal(self.out, self.err):
                self._end_live()
                self.out.flush()
            self.err.write(f"hfremote: {text}\n")
            self.err.flush()

    def close(self) -> None:
        with self._lock:
            self._flush_held()
            self._end_live()
            self.out.flush()


def _isatty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _same_terminal(a: IO[str], b: IO[str]) -> bool:
    return _isatty(a) and _isatty(b)


# -- failures and Ctrl-C at the top level ------------------------------------------------------------
def clean_traceback(error: BaseException) -> str:
    """The error as Python prints it, without hfremote's and concurrent.futures' frames."""
    te = traceback.TracebackException(type(error), error, error.__traceback__)
    seen: set[int] = set()
    stack: Any = te
    while stack is not None and id(stack) not in seen:
        seen.add(id(stack))
        stack.stack[:] = [f for f in stack.stack if not str(f.filename).startswith(_HIDDEN_FILES)]
        stack = stack.__cause__ or stack.__context__
    return "".join(te.format())


def show_error(error: BaseException, what: str) -> None:
    """A failure fetched by a command (`hfremote result`): its remote traceback, then its line."""
    sys.stderr.write(f"hfremote: {what} failed:\n{clean_traceback(error)}")
    sys.stderr.flush()


_SHOWN = "_hfremote_shown"  # an exception hfremote has already explained: the top level prints no traceback
_hook_lock = threading.Lock()
_previous_hook: Any = None


def _hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    if getattr(error, _SHOWN, None) == "interrupt":
        return  # "cancelled job ..." has been said; a traceback into the HTTP client says nothing more
    if getattr(error, _SHOWN, None) == "failure":
        sys.stderr.write(clean_traceback(error))
        sys.stderr.flush()
        return
    _previous_hook(kind, error, tb)


def mark(error: BaseException, how: str) -> BaseException:
    """Mark an error hfremote has reported (`interrupt`) or whose traceback is hfremote's (`failure`), so an
    uncaught one prints as the user's code sees it; installs the hook once, unless the user has their own."""
    global _previous_hook
    try:
        setattr(error, _SHOWN, how)
    except (AttributeError, TypeError):  # an exception class with __slots__
        return error
    with _hook_lock:
        if _previous_hook is None and sys.excepthook is sys.__excepthook__:
            _previous_hook = sys.excepthook
            sys.excepthook = _hook
    return error


def format_cost(usd: float) -> str:
    """Dollars as people read them: cents from a cent up, two significant digits below, never $0.000000."""
    if usd <= 0:
        return "$0"
    if usd >= 0.01:
        return f"${usd:,.2f}"
    if usd < 0.0001:
        return "<$0.0001"
    return f"${float(f'{usd:.2g}'):.6f}".rstrip("0")


_ENTRY_FRAME = re.compile(r'^( *)File "[^"\n]*entry\.py", line \d+, in (?:main|awaited)\n(?:\1 .*\n)*', re.MULTILINE)


def without_last_traceback(lines: list[str]) -> list[str]:
    """Log lines without the traceback that ends them (shown by the exception raised instead)."""
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("Traceback (most recent call last):"):
            return lines[:i]
    return lines


def strip_entry_frames(text: str) -> str:
    """A remote traceback without the frames of hfremote's entry script (they say nothing about the user's code)."""
    return _ENTRY_FRAME.sub("", text)


_following = [0]  # blocking calls showing their output now
_following_lock = threading.Lock()


def follow_call(future: Any, detach: bool, stream_logs: bool, stop: threading.Event | None = None) -> Any:
    """Wait for one call's job, saying what it does: its URL and run id at once, its stage changes, its output
    (stdout), then its value; a failure's remote traceback is shown once, and Ctrl-C says only what it did.
    `stop` (an awaited call's task was cancelled): show nothing more, and return None at the next line."""
    from ._engine import engine
    from ._future import local_lines
    from .errors import RemoteTraceback

    console = Console()
    done = threading.Event()
    notes: _Stages | None = None

    def watch_stages() -> None:
        if notes is not None:
            notes.watch(done)

    stages = threading.Thread(target=watch_stages, name="hfremote-stages", daemon=True)
    if stream_logs:
        console.note(f"{future.name}: job {future.job_id} of run {future.run_id} ({future.url})")
        notes = _Stages(future, console)
        stages.start()
    with _following_lock:
        _following[0] += 1
    try:
        if stream_logs:
            try:
                setup = True  # uv's own lines come first: each becomes a short note, not job output
                for line in local_lines(future.logs(follow=True), future.code_files):
                    if stop is not None and stop.is_set():
                        return None
                    if notes is not None:
                        notes.saw("RUNNING")  # it prints: it runs
                    if setup and SETUP_LINE.match(line.strip()):
                        console.note(f"{future.name}: {_setup_note(line.strip())}")
                        continue
                    setup = False
                    # several blocking calls at once (threads) say whose each line is
                    prefix = f"[{future.name} {future.job_id[:8]}] " if _following[0] > 1 else ""
                    console.job_line(line, prefix, hold_traceback=True)
            except Exception as e:  # the logs are a courtesy: the call's outcome is its result
                console.note(f"stopped following the logs of job {future.job_id}: {e}")
        if stop is not None and stop.is_set():
            return None
        try:
            value = future.result()
        except BaseException as e:
            if not (future.done() and not future.cancelled() and future.exception() is e):
                raise  # Ctrl-C while waiting: below
            # The function's own exception (a KeyboardInterrupt or SystemExit raised in the job too), with the
            # remote traceback as its cause: the same block in the logs would say it twice.
            console.release_held(drop=isinstance(e.__cause__, RemoteTraceback))
            raise mark(e, "failure") from e.__cause__
        finally:
            console.release_held(drop=False)
        if stream_logs:
            done.set()
            stages.join(1.0)
            console.note(f"{future.name}: completed{_took(future.info)}, cost {_cost(future)}")
        return value
    except KeyboardInterrupt as interrupt:
        if getattr(interrupt, _SHOWN, None) == "failure":  # raised by the function in its job: nothing to cancel
            raise
        done.set()
        if stages.is_alive():
            stages.join(1.0)
        console.close()
        if detach:
            console.note(
                f"detached; job {future.job_id} keeps running ({future.url}). "
                f"Follow it with `hfremote attach {future.run_id}`"
            )
        else:
            future.cancel()
            engine().flush()
            console.note(f"cancelled job {future.job_id} ({future.url})")
        raise mark(interrupt, "interrupt") from None
    finally:
        with _following_lock:
            _following[0] -= 1
        done.set()
        if stages.is_alive():
            stages.join(1.0)  # its last note comes before whatever the caller prints next
        console.close()


def _setup_note(line: str) -> str:
    """uv's line as a note about the job's environment."""
    if line.startswith(("Installed", "Downloading", "Uninstalled")):
        return "dependencies: " + line[0].lower() + line[1:]
    return "setting up: " + line[0].lower() + line[1:]


def _took(info: Any) -> str:
    if info.started_at is None or info.finished_at is None:
        return ""
    return f" in {(info.finished_at - info.started_at).total_seconds():.1f}s"


def _cost(future: Any) -> str:
    try:
        cost = future.cost
    except Exception:  # the price list could not be read: the value matters, not its price
        return "unknown"
    return "unknown" if cost is None else format_cost(cost)


class _Stages:
    """Says when the job's stage changes: from what the engine last saw (no request of its own), or from the
    job's first log line (it is running, whatever the engine's last look said)."""

    def __init__(self, future: Any, console: Console) -> None:
        self.future, self.console = future, console
        self.lock = threading.Lock()
        self.seen = str(future.info.status.stage)
        self.since = time.monotonic()
        self.ended = False
        console.note(f"{future.name}: {self.seen.lower()}")

    def saw(self, stage: str) -> None:
        with self.lock:
            if stage == self.seen or self.ended or (stage == "SCHEDULING" and self.seen == "RUNNING"):
                return
            took = time.monotonic() - self.since
            self.seen, self.since = stage, time.monotonic()
            if stage == "COMPLETED":
                self.ended = True  # said with the value's arrival, with its time and cost
                return
            if stage in ("ERROR", "CANCELED", "DELETED"):
                self.ended = True
                message = self.future.info.status.message
                self.console.note(f"{self.future.name}: {stage.lower()}" + (f": {message}" if message else ""))
                return
            self.console.note(f"{self.future.name}: {stage.lower()} (after {took:.1f}s)")

    def watch(self, done: threading.Event) -> None:
        while not done.wait(0.1) and not self.ended:
            self.saw(str(self.future.info.status.stage))


# -- progress bars -----------------------------------------------------------------------------------
def in_notebook() -> bool:
    """Running in a Jupyter kernel (where stderr is not a terminal, but a bar still shows)."""
    return "ipykernel" in sys.modules


def progress_default() -> bool:
    return _isatty(sys.stderr) or in_notebook()


def progress_bar(**kwargs: Any) -> Any:
    """A tqdm bar: the notebook widget where it exists (ipywidgets installed), the text bar otherwise."""
    if in_notebook():
        try:
            import ipywidgets  # type: ignore[import-not-found]  # noqa: F401
            from tqdm.notebook import tqdm as notebook_tqdm

            return notebook_tqdm(**kwargs)
        except ImportError:
            pass
    from tqdm.std import tqdm

    return tqdm(file=sys.stderr, **kwargs)
