"""The script that runs inside the job. Standard library and cloudpickle only.

The client renders this module with a PEP 723 header (Python version, pinned cloudpickle, the
function's dependencies) and uploads it as `entry.py` into the run folder:

    runs/<run-id>/entry.py  manifest.json  function.pkl  inputs/<chunk>.pkl  ->  results/<chunk>.pkl

A chunk is a list of `(input index, pickled (args, kwargs))`. `uv run entry.py CHUNK [CHUNK ...]`
runs each input in turn and, after each one, atomically rewrites the chunk's result file: a pickled
`{input index: pickled payload}`, so finished inputs are never lost. A payload is a dict with the
value, or the exception, its formatted traceback, its type name and message (the last two alone when
the exception itself cannot be pickled).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_RAISED, EXIT_SETUP = 0, 1, 2


def _type_name(obj: object) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _encode(payload: dict[str, Any]) -> bytes:
    """Pickle one input's payload; what cannot travel is replaced by its type, message and traceback."""
    import cloudpickle

    try:
        data: bytes = cloudpickle.dumps(payload)
        if payload.get("error") is not None:  # an exception whose __init__ does not match its args pickles,
            cloudpickle.loads(data)  # but cannot be re-created: then send its type, message and traceback
        return data
    except Exception as e:
        if payload.get("error") is not None:
            payload = {**payload, "error": None}
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


def _write(path: Path, results: dict[int, bytes]) -> None:
    import cloudpickle

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(cloudpickle.dumps(results))
    os.replace(tmp, path)  # the client never sees half a result file


def _failure(exc: BaseException, note: str | None = None) -> dict[str, Any]:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {
        "ok": False,
        "error": exc,
        "type": _type_name(exc),
        "message": note or str(exc),
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


def _setup_problem(folder: Path) -> str | None:
    """Why this job cannot run the call here, or None."""
    manifest = json.loads((folder / "manifest.json").read_text())
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if manifest["python"] != here:
        return (
            f"the job runs Python {here} but the function was pickled with Python {manifest['python']}: "
            "cloudpickle needs the same version on both ends (check the image and python= options)"
        )
    import cloudpickle

    if cloudpickle.__version__ != manifest["cloudpickle"]:
        return (
            f"the job has cloudpickle {cloudpickle.__version__} but the caller has {manifest['cloudpickle']}: "
            "the entry script pins it, so the image's environment overrides uv's (check the image)"
        )
    return None


def _indexes(folder: Path, chunk: str) -> list[int]:
    import cloudpickle

    return [index for index, _ in cloudpickle.loads((folder / "inputs" / f"{chunk}.pkl").read_bytes())]


def _fail_all(folder: Path, result_names: dict[str, str], payload: dict[str, Any]) -> None:
    encoded = _encode(payload)
    for chunk, name in result_names.items():
        _write(folder / "results" / f"{name}.pkl", dict.fromkeys(_indexes(folder, chunk), encoded))


def main(argv: list[str]) -> int:
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)  # log lines stream as they are printed
    folder = Path(__file__).resolve().parent
    chunks = argv[1:]
    # A scheduled function: every run executes chunk 0 and keeps its result under a run-unique name.
    each_run = chunks[:1] == ["--each-run"]
    if each_run:
        chunks = chunks[1:]
        name = os.environ.get("JOB_ID") or f"{os.getpid()}-{os.urandom(4).hex()}"
        print(f"hfremote: this run's result is results/{name}.pkl", file=sys.stderr)
    result_names = {chunk: name if each_run else chunk for chunk in chunks}
    problem = _setup_problem(folder)
    if problem is not None:
        print(f"hfremote: {problem}", file=sys.stderr)
        failure = {"ok": False, "error": None, "type": "hfremote.errors.JobFailedError", "message": problem}
        _fail_all(folder, result_names, {**failure, "traceback": ""})
        return EXIT_SETUP
    import cloudpickle

    try:
        shipped = cloudpickle.loads((folder / "function.pkl").read_bytes())
        function = shipped["function"]
        _install_modules(shipped["modules"])
    except Exception as e:
        note = f"could not load the function in the job: {type(e).__name__}: {e}"
        if isinstance(e, ImportError):
            note += " (add the missing package to dependencies=[...])"
        print(f"hfremote: {note}", file=sys.stderr)
        _fail_all(folder, result_names, _failure(e, note))
        return EXIT_SETUP
    status = EXIT_OK
    for chunk in chunks:
        done: dict[int, bytes] = {}
        for index, call in cloudpickle.loads((folder / "inputs" / f"{chunk}.pkl").read_bytes()):
            try:
                args, kwargs = cloudpickle.loads(call)
                payload = {"ok": True, "value": function(*args, **kwargs)}
            except BaseException as e:  # the user's SystemExit and KeyboardInterrupt travel back too
                payload = _failure(e)
                status = EXIT_RAISED
                traceback.print_exc()
            done[index] = _encode(payload)
            _write(folder / "results" / f"{result_names[chunk]}.pkl", done)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
