"""The script that runs inside the job. Standard library and cloudpickle only.

The client renders this module with a PEP 723 header (Python version, pinned cloudpickle, the
function's dependencies) and uploads it as `entry.py` into the run's shared folder (see `_run.py`):

    /hfremote/run/entry.py  manifest.json  function.pkl  lease     (read-only)
    /hfremote/chunk/inputs.pkl  ->  results.pkl                     (this job's chunk, read-write)

`uv run entry.py [--each-run] CHUNK_FOLDER` runs the chunk's inputs, a list of `(input index, pickled
(args, kwargs))`, in turn and appends `(input index, pickled payload)` to the chunk's result file as
soon as the input is done, so finished inputs are never lost and a chunk costs one write per input
(not a rewrite of everything so far). A payload is a dict with the value, or the exception, its
formatted traceback, its type name and message (the last two alone when the exception itself cannot
be pickled). A job that runs again (the platform's `attempts`) keeps the results it has and runs only
the inputs that have none.

While the shared folder has a `lease` file, the client that started the run renews it; a job whose
lease has not changed for its `ttl` seconds ends itself: its client is gone, and nobody would read
what it computes (runs started with `detach=True` have no lease).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
import threading
import time
from typing import Any

EXIT_OK, EXIT_RAISED, EXIT_SETUP, EXIT_LEASE = 0, 1, 2, 3
SETUP_FAILURE = "hfremote.errors.JobFailedError"  # the type name of a failure to set the call up in the job
# Imported with the module only when this module is the job's script, where the time counts.
cloudpickle: Any = None


def read_results(data: bytes) -> tuple[dict[int, bytes], int]:
    """A result file's records: ({input index: pickled payload}, length of the well-formed part).

    A record cut short (the job was killed while writing it) ends the file; a later record for the
    same input (a second attempt) wins.
    """
    stream = io.BytesIO(data)
    unpickler = pickle.Unpickler(stream)
    results: dict[int, bytes] = {}
    good = 0
    while stream.tell() < len(data):
        try:
            record = unpickler.load()
        except Exception:  # a truncated or damaged tail
            break
        if isinstance(record, dict):  # the format of hfremote 0.1: one pickled {index: payload}
            results.update(record)
        else:
            index, payload = record
            results[index] = payload
        good = stream.tell()
    return results, good


def _type_name(obj: object) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _encode(payload: dict[str, Any]) -> bytes:
    """Pickle one input's payload; what cannot travel is replaced by its type, message and traceback."""
    import traceback

    try:
        data: bytes = cloudpickle.dumps(payload)
        if payload.get("error") is not None:  # an exception whose __init__ does not match its args pickles,
            cloudpickle.loads(data)  # but cannot be re-created: then send its type, message and traceback
        return data
    except Exception as e:
        if payload.get("error") is not None:  # its parts, so the client rebuilds it as itself (no __init__)
            payload = {**payload, "error": None, **_exception_parts(payload["error"])}
        else:  # the return value cannot travel
            payload = {
                "ok": False,
                "error": None,
                "type": "hfremote.errors.PicklingError",
                "message": f"the function's result ({_type_name(payload.get('value'))}) cannot be pickled: {e}",
                "traceback": traceback.format_exc(),
            }
        encoded: bytes = cloudpickle.dumps(payload)
        return encoded


def _exception_parts(exc: BaseException) -> dict[str, Any]:
    """An exception that does not round-trip through pickle (a constructor with keyword-only or more
    arguments than `args` holds): its class, args and attributes, each pickled alone; the attributes that
    cannot travel are named instead."""
    try:
        parts: dict[str, Any] = {"class": cloudpickle.dumps(type(exc))}
    except Exception:  # the class itself cannot travel: the client shows its name and message
        return {}
    try:
        parts["args"] = cloudpickle.dumps(tuple(exc.args))
    except Exception:
        parts["args"] = cloudpickle.dumps((_text(exc),))
    state, lost = {}, []
    for key, value in list(getattr(exc, "__dict__", {}).items()):
        try:
            state[key] = cloudpickle.dumps(value)
        except Exception:
            lost.append(key)
    parts.update(state=state, lost=lost)
    return parts


class _Results:
    """A chunk's result file, opened for appending after the records an earlier attempt left."""

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # Open for the whole chunk (closed by close()); in append mode every write lands at the end.
        self._file = open(path, "a+b")  # noqa: SIM115
        self._file.seek(0)
        self.done, good = read_results(self._file.read())
        self._file.truncate(good)  # drop a half-written record, or it would hide everything after it

    def add(self, index: int, payload: bytes) -> None:
        self._file.write(pickle.dumps((index, payload), protocol=pickle.HIGHEST_PROTOCOL))
        self._file.flush()  # on disk before the next input starts
        self.done[index] = payload

    def close(self) -> None:
        self._file.close()


def _note(exc: BaseException, text: str) -> None:
    notes = getattr(exc, "__notes__", None)  # BaseException.add_note is 3.11+
    exc.__notes__ = [*notes, text] if isinstance(notes, list) else [text]  # type: ignore[attr-defined]


def _text(exc: BaseException) -> str:
    """str(exc), or what Python prints when that fails (a user's __str__ may raise)."""
    try:
        return str(exc)
    except Exception:
        return f"<exception str() failed: {type(exc).__name__}>"


def _failure(exc: BaseException, note: str | None = None) -> dict[str, Any]:
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {
        "ok": False,
        "error": exc,
        "type": _type_name(exc),
        "message": note or _text(exc),
        "traceback": text,
    }


def _install_modules(modules: dict[str, Any]) -> None:
    """Make the caller's own modules importable: the function imports them in its body."""
    for name in sorted(modules):  # parents first
        if name in sys.modules:
            continue
        sys.modules[name] = modules[name]
        parent, _, child = name.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, modules[name])


def _setup_problem(folder: str) -> str | None:
    """Why this job cannot run the call here, or None."""
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if manifest["python"] != here:
        return (
            f"the job runs Python {here} but the function was pickled with Python {manifest['python']}: "
            "cloudpickle needs the same version on both ends (check the image and python= options)"
        )
    if cloudpickle.__version__ != manifest["cloudpickle"]:
        return (
            f"the job has cloudpickle {cloudpickle.__version__} but the caller has {manifest['cloudpickle']}: "
            "the entry script pins it, so the image's environment overrides uv's (check the image)"
        )
    return None


def _inputs(chunk: str) -> list[tuple[int, bytes]]:
    with open(os.path.join(chunk, "inputs.pkl"), "rb") as f:
        calls: list[tuple[int, bytes]] = cloudpickle.load(f)
    return calls


def _fail_all(chunk: str, results_path: str, payload: dict[str, Any]) -> None:
    encoded = _encode(payload)
    results = _Results(results_path)
    for index, _ in _inputs(chunk):
        if index not in results.done:
            results.add(index, encoded)
    results.close()


def _watch_lease(path: str) -> None:
    """End the job when the run's lease stops being renewed (its client died without cancelling it)."""
    try:
        with open(path, "rb") as f:
            first = f.read()
        lease = json.loads(first)
        ttl = float(lease["ttl"])
    except (OSError, ValueError, KeyError, TypeError):
        return  # no lease: a detached run, a scheduled function, or a platform that shows no such file
    if lease.get("detached") or not ttl > 0:
        return

    # A job that waited in the queue after its client died starts with a lease already long stale: it ends
    # after one look, not a whole ttl later. Only this check compares the client's clock with the job's,
    # with a margin of three quarters of a ttl (a live client renews every quarter).
    age = time.time() - float(lease.get("renewed") or time.time())
    head_start = ttl if age > ttl else 0.0

    def watch() -> None:
        # Otherwise the job's own clock only: the client's clock may differ, so what counts is how long the
        # file has stayed the same, not the time written in it.
        seen, since = first, time.monotonic() - head_start
        while True:
            time.sleep(min(ttl / 8, 10.0))
            try:
                with open(path, "rb") as f:
                    now = f.read()
            except OSError:
                continue  # a file being replaced; look again
            if now != seen:
                seen, since = now, time.monotonic()
                if b'"detached": true' in now:
                    return
            elif time.monotonic() - since > ttl:
                print(
                    f"hfremote: the client that started this run stopped renewing its lease {ttl:.0f}s ago "
                    "(it was killed or lost its connection): ending the job so it stops billing. "
                    "Use detach=True for jobs that must outlive their client.",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(EXIT_LEASE)

    threading.Thread(target=watch, name="hfremote-lease", daemon=True).start()


class _Updates:
    """A text stream whose carriage-return updates (a progress bar) each end a log line.

    The platform splits a job's output into log lines at newlines only, so a bar's hundred updates would
    arrive as one line when it finishes. A carriage return after text on the same line ends that line
    first: each update becomes its own line starting with "\r", which the client draws over the last.
    """

    def __init__(self, stream: Any) -> None:
        self._stream, self._mid = stream, False  # _mid: text written since the last line break

    def write(self, text: str) -> int:
        out = []
        for i, piece in enumerate(text.split("\r")):
            if i:  # a carriage return before `piece`
                if piece.startswith("\n"):
                    out.append("\r")  # "\r\n": an ordinary line end
                else:
                    out.append("\n\r" if self._mid else "\r")
                    self._mid = False
            if piece:
                out.append(piece)
                self._mid = not piece.endswith("\n")
        self._stream.write("".join(out))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _is_loop_frame(filename: str) -> bool:
    import asyncio

    return filename == __file__ or filename.startswith(os.path.dirname(asyncio.__file__) + os.sep)


class _Loop:
    """The job's event loop for an async function: made at its first coroutine, shared by the chunk's inputs
    (what they keep across inputs, a client session say, stays on one loop), closed at the end as
    `asyncio.run` closes its own."""

    def __init__(self) -> None:
        self._loop: Any = None

    def awaited(self, value: Any) -> Any:
        from collections.abc import Coroutine

        if not isinstance(value, Coroutine):
            return value
        if self._loop is None:
            import asyncio

            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
        try:
            return self._loop.run_until_complete(value)
        except BaseException as e:  # its traceback starts at the user's coroutine, as a plain call's does
            tb = e.__traceback__
            while tb is not None and _is_loop_frame(tb.tb_frame.f_code.co_filename):
                tb = tb.tb_next
            raise e.with_traceback(tb or e.__traceback__)  # noqa: B904 (the same exception, its context kept)

    def close(self) -> None:
        if self._loop is None:
            return
        import asyncio

        loop = self._loop
        try:
            tasks = asyncio.all_tasks(loop)  # tasks an input left running
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        except Exception as e:  # the results are written: a failing clean-up only says so
            print(f"hfremote: closing the job's event loop: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def main(argv: list[str]) -> int:
    global cloudpickle
    import cloudpickle

    # The platform's logs do not keep the streams apart, and it reads the two pipes separately: writing
    # both through one keeps the job's lines in the order they were printed.
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(sys.stdout.fileno(), sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptors (an unusual runner): keep them
        pass
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)  # log lines stream as they are printed
    sys.stdout, sys.stderr = _Updates(sys.stdout), _Updates(sys.stderr)
    shared = os.path.dirname(os.path.realpath(__file__))
    # A scheduled function: every run executes the one chunk and keeps its result under a run-unique name.
    each_run = argv[1:2] == ["--each-run"]
    chunk = argv[-1]
    results_path = os.path.join(chunk, "results.pkl")
    if each_run:
        name = os.environ.get("JOB_ID") or f"{os.getpid()}-{os.urandom(4).hex()}"
        results_path = os.path.join(chunk, f"results-{name}.pkl")
        print(f"hfremote: this run's result is results-{name}.pkl", file=sys.stderr)
    _watch_lease(os.path.join(shared, "lease"))
    problem = _setup_problem(shared)
    if problem is not None:
        print(f"hfremote: {problem}", file=sys.stderr)
        failure = {"ok": False, "error": None, "type": SETUP_FAILURE, "message": problem}
        _fail_all(chunk, results_path, {**failure, "traceback": ""})
        return EXIT_SETUP
    try:
        with open(os.path.join(shared, "function.pkl"), "rb") as f:
            shipped = cloudpickle.load(f)
        function = shipped["function"]
        _install_modules(shipped["modules"])
    except Exception as e:
        note = f"could not load the function in the job: {type(e).__name__}: {e}"
        if isinstance(e, ImportError):
            note += " (add the missing package to dependencies=[...])"
        print(f"hfremote: {note}", file=sys.stderr)
        _fail_all(chunk, results_path, _failure(e, note))
        return EXIT_SETUP
    status = EXIT_OK
    results = _Results(results_path)
    loop = _Loop()
    for index, call in _inputs(chunk):
        if index in results.done:  # an earlier attempt of this job finished it
            continue
        try:
            try:
                args, kwargs = cloudpickle.loads(call)
            except ImportError as e:  # an argument's class comes from a package the job lacks
                _note(
                    e,
                    "hfremote: this call's arguments could not be loaded in the job; add the package "
                    "to dependencies=[...]",
                )
                raise
            payload = {"ok": True, "value": loop.awaited(function(*args, **kwargs))}
        except BaseException as e:  # the user's SystemExit and KeyboardInterrupt travel back too
            import traceback

            payload = _failure(e)
            status = EXIT_RAISED
            traceback.print_exc()
        results.add(index, _encode(payload))
    results.close()
    loop.close()
    return status


LINGER_SECONDS = 30.0  # how long threads the function left running may go on once every result is saved


def _end(status: int) -> None:
    """Exit once the chunk's results are saved. Python's own exit runs first (libraries' exit hooks shut
    their worker pools down, loky's among them); threads the function left running anyway (a server
    started in a setup method) get a short grace, then the job ends instead of billing until its timeout."""
    try:
        linger = float(os.environ.get("HFREMOTE_LINGER_SECONDS", LINGER_SECONDS))
    except ValueError:
        linger = LINGER_SECONDS

    def cut_short() -> None:
        threading.Event().wait(linger)  # the process is gone before this returns, unless a thread holds it
        main_thread = threading.main_thread()
        left = [t.name for t in threading.enumerate() if t is not main_thread and not t.daemon and t.is_alive()]
        print(
            f"hfremote: every result is saved; ending the job although thread(s) {', '.join(left)} still run "
            f"after {linger:.0f}s (join them in the function, or make them daemon threads)",
            file=sys.stderr,
            flush=True,
        )
        import atexit

        atexit._run_exitfuncs()  # what the user registered still runs, as at a normal exit
        sys.stdout.flush()
        os._exit(status)

    threading.Thread(target=cut_short, name="hfremote-exit", daemon=True).start()
    sys.exit(status)


if __name__ == "__main__":
    _end(main(sys.argv))
