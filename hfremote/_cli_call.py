"""`hfremote run path.py::fn --lr 3e-4`: one function as a job, its arguments from its signature.

The function may be decorated with `@remote(...)` (its options are the defaults) or be a plain
function; `--flavor`, `--timeout` and `--detach` override the decorator's options, before the target
or after it (unless the function has a parameter of that name: then it is the function's).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from . import _cli_runs as runs

_OVERRIDES = ("flavor", "timeout", "detach")


def _override_options(parser: argparse.ArgumentParser, taken: set[str], suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    if "flavor" not in taken:
        parser.add_argument("--flavor", default=default, help="hardware flavor (see `hfremote hardware`)")
    if "timeout" not in taken:
        parser.add_argument("--timeout", default=default, help="job timeout: 90s, 30m, 2h, 1d or seconds")
    if "detach" not in taken:
        parser.add_argument(
            "--detach",
            action="store_true",
            default=default,
            help="start the job and return: it keeps running (follow it with `hfremote attach RUN`)",
        )


def add_run(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="run one function as a job: hfremote run path.py::fn --arg value",
        description="Run one function of a file (path.py::fn) or module (module:fn) as a Hugging Face job and "
        "print its return value's repr. The function's arguments follow the target as options named after "
        "its parameters, typed by its annotations (--lr 3e-4 --epochs 2 --fp16/--no-fp16); "
        "`hfremote run path.py::fn --help` lists them. --flavor, --timeout and --detach override the "
        "options of its @remote decorator.",
    )
    _override_options(run, set(), suppress=False)
    run.add_argument("--raw", action="store_true", help="print the job's control characters as they are")
    run.add_argument("target", metavar="PATH.py::FUNCTION|MODULE:FUNCTION")
    run.add_argument("args", nargs=argparse.REMAINDER, help="the function's arguments: --param value ...")
    run.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    from ._cli_args import call_parser, split_call
    from ._cls import RemoteClass
    from ._function import RemoteFunction, remote
    from ._schedule import ScheduledFunction
    from .cli import load, split_target

    where, name = split_target(args.target)
    if name is None:
        raise runs.CommandError(f"name the function to run: {where}::FUNCTION (a file) or {where}:FUNCTION")
    module = load(where)
    target = getattr(module, name, None)
    if target is None or not callable(target):
        found = sorted(k for k, v in vars(module).items() if isinstance(v, RemoteFunction))
        hint = f"; its remote functions: {', '.join(found)}" if found else ""
        raise runs.CommandError(f"{where} has no function {name!r}{hint}")
    if isinstance(target, (RemoteClass, type)):
        raise runs.CommandError(
            f"{name} is a class: `hfremote run` runs functions. Write a function that calls its method "
            f"(`def main(...): return {name}(...).method(...)`) and run that"
        )
    if isinstance(target, ScheduledFunction):
        raise runs.CommandError(
            f"{name} is a scheduled function: deploy it with `hfremote deploy {where}` or run it now with "
            f"`hfremote schedules trigger {target.name}`"
        )
    rf: RemoteFunction[..., Any] = target if isinstance(target, RemoteFunction) else remote(target)
    parser, params = call_parser(rf.function, f"hfremote run {args.target}")
    _override_options(parser, {p.name for p in params}, suppress=True)
    values = vars(parser.parse_args(args.args))
    overrides = {key: values.pop(key) for key in _OVERRIDES if key in values and key not in {p.name for p in params}}
    for key in _OVERRIDES:
        if key not in overrides and getattr(args, key, None):
            overrides[key] = getattr(args, key)
    call_args, call_kwargs = split_call(params, values)
    if args.raw:
        os.environ["HFREMOTE_RAW_OUTPUT"] = "1"
    chosen = rf.options(**overrides) if overrides else rf
    if chosen.settings.detach:
        runs.require_backend("run --detach")  # a detached job in a throwaway emulator would die with it
        future = chosen.submit(*call_args, **call_kwargs)
        print(f"hfremote: started run {future.run_id}: job {future.job_id} ({future.url})", file=sys.stderr)
        print(
            f"hfremote: follow it with `hfremote attach {future.run_id}`; its value: `hfremote result {future.run_id}`",
            file=sys.stderr,
        )
        print(future.run_id)
        return 0
    try:
        value = chosen(*call_args, **call_kwargs)
    except KeyboardInterrupt:
        return 130  # the call has said what it did with the job
    except Exception as e:
        from ._console import clean_traceback
        from .errors import HFRemoteError, RemoteTraceback

        if isinstance(e, HFRemoteError) and not isinstance(e.__cause__, RemoteTraceback):
            raise  # hfremote's own (bad options, the platform, a job without a result): one line, from main
        sys.stderr.write(clean_traceback(e))
        return 1
    if value is not None:
        print(repr(value))
    return 0
