"""The `hfremote` command.

argparse rather than click: it is in the standard library and loads in a few milliseconds, the
`emulator` sub-command and its options are argparse already, and a function's own options for
`hfremote run` are built from its signature as a second parser (see `_cli_args.py`). Every verb imports
what it needs when it runs, so `hfremote --help` loads neither huggingface_hub nor the emulator.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from . import _cli_runs as runs
from .errors import HFRemoteError


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _emulator(args: argparse.Namespace) -> int:
    from .emulator import Emulator, Faults
    from .emulator._sandbox import mode_from as sandbox_mode
    from .emulator._server import DEFAULT_USER
    from .emulator._users import parse_org, parse_user

    try:
        faults = [Faults.parse(spec) for spec in args.fault]
    except (TypeError, ValueError) as e:
        print(f"hfremote emulator: invalid --fault: {e}", file=sys.stderr)
        return 2
    try:
        users = [parse_user(spec) for spec in args.user or [DEFAULT_USER]]
        for spec in args.org:
            parse_org(spec)
    except ValueError as e:
        print(f"hfremote emulator: {e}", file=sys.stderr)
        return 2
    (user, first_token), others = users[0], users[1:]
    if any(token is None for _, token in others):
        print("hfremote emulator: every --user after the first needs its token: --user NAME:TOKEN", file=sys.stderr)
        return 2
    if first_token is not None and args.token is not None and first_token != args.token:
        print("hfremote emulator: --token and --user NAME:TOKEN name two tokens for one user", file=sys.stderr)
        return 2
    if args.max_running is not None and args.max_running < 1:
        print("hfremote emulator: --max-running must be at least 1", file=sys.stderr)
        return 2
    try:
        sandbox_mode(args.sandbox)  # an invalid $HFREMOTE_EMULATOR_SANDBOX is refused here, before anything starts
        emu = Emulator(
            args.state_dir,
            token=first_token or args.token,
            user=user,
            users=tuple((name, token) for name, token in others if token is not None),
            orgs=tuple(args.org),
            host=args.host,
            port=args.port,
            max_running=args.max_running,
            faults=list(faults),
            seed=args.seed,
            sandbox=args.sandbox,
            gpus=_gpus(args.gpus),
        )
    except ValueError as e:
        print(f"hfremote emulator: {e}", file=sys.stderr)
        return 2
    # `kill` (SIGTERM) must stop the emulator as Ctrl-C does: jobs run in their own sessions and would outlive it
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        emu.start()
    except (RuntimeError, OSError, OverflowError) as e:  # a port taken or out of range, a state dir in use
        print(f"hfremote emulator: cannot start: {e}", file=sys.stderr)
        return 2
    print(f"hfremote emulator serving on {emu.endpoint} (state in {emu.state_dir})", flush=True)
    where = "the token you gave" if first_token or args.token else f"the token in {emu.state_dir / 'token'}"
    print(f"  export HF_ENDPOINT={emu.endpoint} HF_TOKEN=<{where}>", flush=True)
    try:
        emu.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
    return 0


def _gpus(value: str | None) -> int | list[str] | None:
    """--gpus: a count ("4", simulated when there are no such devices), ids ("0,2"), or "none"."""
    if value is None:
        return None
    if value.strip().lower() == "none":
        return []
    if value.strip().isdigit():
        return int(value)
    return [part.strip() for part in value.split(",") if part.strip()]


def load(target: str) -> ModuleType:
    """A Python file (by path) or an importable module (by dotted name)."""
    path = Path(target)
    if path.suffix == ".py" or path.exists():
        if not path.is_file():
            raise runs.CommandError(f"no such file: {target}")
        sys.path.insert(0, str(path.resolve().parent))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise runs.CommandError(f"cannot load {target}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    sys.path.insert(0, os.getcwd())  # `hfremote run pkg.mod:fn` finds the caller's own modules, as python -m does
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as e:
        raise runs.CommandError(f"{target!r} is neither a file nor an importable module ({e})") from None


def split_target(target: str) -> tuple[str, str | None]:
    """`path.py::fn`, `module:fn`, or a file or module alone."""
    if "::" in target:
        where, _, name = target.partition("::")
        return where, name or None
    if ":" in target and not Path(target).exists():
        where, _, name = target.rpartition(":")
        return where, name or None
    return target, None


def _deploy(args: argparse.Namespace) -> int:
    from ._cli_args import parse_call
    from ._schedule import ScheduledFunction

    runs.require_backend("deploy")  # a schedule deployed into a throwaway emulator would vanish with it
    where, name = split_target(args.target)
    module = load(where)
    found = {key: value for key, value in vars(module).items() if isinstance(value, ScheduledFunction)}
    if name is not None:
        found = {key: value for key, value in found.items() if name in (key, value.name)}
    if not found:
        what = f"no scheduled function {name!r}" if name else "no scheduled functions (@remote.schedule)"
        print(f"hfremote deploy: {what} in {where}", file=sys.stderr)
        return 1
    if args.args and len(found) > 1:
        names = ", ".join(f"{where}::{key}" for key in found)
        print(
            f"hfremote deploy: arguments given, but {where} has several scheduled functions: name one ({names})",
            file=sys.stderr,
        )
        return 2
    for key, fn in found.items():
        call_args, call_kwargs = parse_call(fn.__wrapped__, args.args, f"hfremote deploy {where}::{key}")
        done = fn.deploy(*call_args, **call_kwargs)
        print(f"{done.action:<11} {done.name}  {done.schedule}  (scheduled job {done.scheduled_job_id})")
    return 0


def _schedules(args: argparse.Namespace) -> int:
    from ._schedule import SCHEDULE_LABEL, control, deployed

    if args.action == "list":
        rows = [("NAME", "SCHEDULE", "SUSPENDED", "NEXT RUN", "LAST RUN", "ID")]
        for sched in deployed():
            status = sched.status
            next_run = status.next_job_run_at if status is not None else None
            last = status.last_job if status is not None else None
            rows.append(
                (
                    (sched.job_spec.labels or {}).get(SCHEDULE_LABEL, "?"),
                    sched.schedule or "",
                    str(bool(sched.suspend)),
                    f"{next_run:%Y-%m-%d %H:%M}" if next_run else "-",
                    f"{last.at:%Y-%m-%d %H:%M}" if last else "-",
                    sched.id,
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        return 0
    if not args.name:
        print(f"hfremote schedules {args.action}: give the scheduled function's NAME", file=sys.stderr)
        return 2
    result = control(args.name, args.action)
    if args.action == "trigger":
        print(f"triggered {args.name}: job {result.id} ({result.url})")
    else:
        print(f"{args.action}{'d' if args.action.endswith('e') else 'ed'} {args.name}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hfremote", description="Run Python functions on Hugging Face Jobs.")
    commands = parser.add_subparsers(dest="command", required=True)
    emu = commands.add_parser(
        "emulator",
        help="serve an offline emulator of the Hugging Face Jobs platform",
        description="Serve an offline emulator of Hugging Face Jobs, scheduled jobs and Buckets on loopback. "
        "Point the `hf` CLI or huggingface_hub at it with HF_ENDPOINT and HF_TOKEN.",
    )
    emu.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    emu.add_argument("--port", type=int, default=8787, help="port to bind; 0 picks a free one (default: 8787)")
    emu.add_argument(
        "--state-dir",
        default=".hfremote-emulator",
        help="where jobs, schedules and bucket files are kept (default: ./.hfremote-emulator)",
    )
    emu.add_argument("--token", help="the first user's token (default: one saved in the state directory)")
    emu.add_argument(
        "--user",
        action="append",
        metavar="NAME[:TOKEN]",
        help="a user and its token (repeatable; the first is the default user, its token may come from --token; "
        "default: emulator-user)",  # (the emulator's DEFAULT_USER: not imported, so the command loads fast)
    )
    emu.add_argument(
        "--org",
        action="append",
        default=[],
        metavar="ORG[:MEMBER,...]",
        help="an organization and its members (default: the first user; repeatable)",
    )
    emu.add_argument(
        "--max-running", type=int, help="jobs running at once; others wait in SCHEDULING (default: the number of cores)"
    )
    emu.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="inject faults, e.g. '429 POST /api/jobs/* count=3', '503 GET * rate=0.1', "
        "'drop GET /api/jobs/*/logs after=2', 'kill count=1 delay=0.5' (repeatable)",
    )
    emu.add_argument("--seed", type=int, help="random seed for rate-based faults")
    emu.add_argument(
        "--sandbox",
        choices=["auto", "on", "off"],
        help="run jobs in a bubblewrap sandbox that looks like their container: auto (where it can run), "
        "on (fail where it cannot) or off (host processes) (default: $HFREMOTE_EMULATOR_SANDBOX or auto)",
    )
    emu.add_argument(
        "--gpus",
        metavar="POOL",
        help="the GPUs that GPU flavors get, each to one job at a time: ids ('0,1'), a count ('4'; simulated "
        "where there are no such devices) or 'none' (default: this machine's NVIDIA GPUs)",
    )
    emu.add_argument("-v", "--verbose", action="store_true", help="log every request")
    emu.set_defaults(handler=_emulator)

    deploy = commands.add_parser(
        "deploy",
        help="deploy the @remote.schedule functions of a file or module",
        description="Create or update the scheduled job of every ScheduledFunction found in a Python file or "
        "module (or of one: path.py::fn, module:fn), and print what was created, updated, rescheduled or left "
        "unchanged. The function's arguments follow the target as options named after its parameters "
        "(hfremote deploy examples/scheduled.py --board open-llm --top 3). Needs a Hugging Face token or "
        "HF_ENDPOINT: a schedule deployed into a throwaway emulator would vanish.",
    )
    deploy.add_argument("target", metavar="PATH_OR_MODULE[::FUNCTION]")
    deploy.add_argument("args", nargs=argparse.REMAINDER, help="the function's arguments: --param value ...")
    deploy.set_defaults(handler=_deploy)

    schedules = commands.add_parser("schedules", help="list or control deployed scheduled functions")
    schedules.add_argument(
        "action",
        nargs="?",
        default="list",
        choices=["list", "suspend", "resume", "trigger", "delete"],
        help="what to do (default: list)",
    )
    schedules.add_argument("name", nargs="?", help="the scheduled function's name (see the list)")
    schedules.set_defaults(handler=_schedules)
    _add_run_verbs(commands)
    return parser


def _add_run_verbs(commands: Any) -> None:
    from ._cli_call import add_run

    add_run(commands)
    ps = commands.add_parser(
        "ps",
        help="list runs (calls and maps), not jobs",
        description="Runs with unfinished jobs: their id, "
        "function, jobs by stage, when they started and their cost so far.",
    )
    ps.add_argument("-a", "--all", action="store_true", help="finished runs too")
    ps.add_argument("--json", action="store_true", help="print JSON")
    ps.set_defaults(handler=runs.ps)

    target = {"metavar": "RUN|JOB", "help": "a run id (see `hfremote ps`) or a job id"}
    logs = commands.add_parser("logs", help="print the logs of a run's jobs or of one job")
    logs.add_argument("target", **target)
    logs.add_argument("-f", "--follow", action="store_true", help="follow the logs until the jobs end")
    logs.add_argument("--raw", action="store_true", help="print control characters (colours, ...) as they are")
    logs.set_defaults(handler=runs.logs)

    cancel = commands.add_parser("cancel", help="cancel a run's unfinished jobs, or one job")
    cancel.add_argument("target", **target)
    cancel.set_defaults(handler=runs.cancel)

    result = commands.add_parser(
        "result",
        help="print the result of a run or job (waits for it)",
        description="Print the repr of the value a run or a job returned (every input's, for a map), waiting "
        "for jobs still running; a failure prints its remote traceback and exits with status 1.",
    )
    result.add_argument("target", **target)
    result.add_argument("-o", "--output", metavar="FILE", help="write the value (a list, for a map) with cloudpickle")
    result.set_defaults(handler=runs.result)

    attach = commands.add_parser(
        "attach",
        help="follow a run to its end: its logs, then its results",
        description="Follow a run started by this or another process: its jobs' logs, then its results. "
        "Ctrl-C stops following; the run keeps running.",
    )
    attach.add_argument("target", metavar="RUN", help="a run id (see `hfremote ps`)")
    attach.add_argument("--raw", action="store_true", help="print control characters as they are")
    attach.set_defaults(handler=runs.attach)

    gc = commands.add_parser(
        "gc",
        help="delete the bucket folders of finished runs",
        description="Delete runs/<run id>/ in the {namespace}/hfremote bucket for runs that finished and are "
        "older than --older-than. Never a running run's folder, never a scheduled function's (schedules/).",
    )
    gc.add_argument("--older-than", default="7d", metavar="AGE", help="e.g. 12h, 7d, 2w (default: 7d)")
    gc.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    gc.set_defaults(handler=runs.gc)

    hardware = commands.add_parser("hardware", help="list the hardware flavors with their prices")
    hardware.add_argument("--json", action="store_true", help="print JSON")
    hardware.set_defaults(handler=runs.hardware)


def _version() -> str:
    from importlib.metadata import version

    return f"hfremote {version('hfremote')}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.add_argument("--version", action="version", version=_version())
    args = parser.parse_args(argv)
    if getattr(args, "verbose", False):
        logging.basicConfig(level=logging.INFO)
    try:
        return int(args.handler(args))
    except runs.CommandError as e:
        print(f"hfremote {args.command}: {e}", file=sys.stderr)
        return 2
    except HFRemoteError as e:
        print(f"hfremote {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `hfremote ps | head`: the reader has what it wanted
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
