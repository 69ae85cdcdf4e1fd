"""The `hfremote` command."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import signal
import sys
from pathlib import Path
from types import FrameType, ModuleType

from .emulator import Emulator, Faults
from .emulator._sandbox import mode_from as sandbox_mode
from .emulator._server import DEFAULT_USER
from .emulator._users import parse_org, parse_user
from .errors import HFRemoteError


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _emulator(args: argparse.Namespace) -> int:
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
    emu.start()
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


def _load(target: str) -> ModuleType:
    """A Python file (by path) or an importable module (by dotted name)."""
    path = Path(target)
    if path.suffix == ".py" or path.exists():
        if not path.is_file():
            raise SystemExit(f"hfremote deploy: no such file: {target}")
        sys.path.insert(0, str(path.resolve().parent))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise SystemExit(f"hfremote deploy: cannot load {target}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(target)


def _deploy(args: argparse.Namespace) -> int:
    from ._schedule import ScheduledFunction

    module = _load(args.target)
    functions = [value for value in vars(module).values() if isinstance(value, ScheduledFunction)]
    if not functions:
        print(f"hfremote deploy: no scheduled functions (@remote.schedule) in {args.target}", file=sys.stderr)
        return 1
    for fn in functions:
        done = fn.deploy()
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
        f"default: {DEFAULT_USER})",
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
        help="deploy every @remote.schedule function of a file or module",
        description="Create or update the scheduled job of every ScheduledFunction found in a Python file or "
        "module, and print what was created, updated, rescheduled or left unchanged.",
    )
    deploy.add_argument("target", metavar="PATH_OR_MODULE")
    deploy.set_defaults(handler=_deploy)

    schedules = commands.add_parser("schedules", help="list or control deployed scheduled functions")
    schedules.add_argument(
        "action", nargs="?", default="list", choices=["list", "suspend", "resume", "trigger", "delete"]
    )
    schedules.add_argument("name", nargs="?", help="the scheduled function's name (see the list)")
    schedules.set_defaults(handler=_schedules)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "verbose", False):
        logging.basicConfig(level=logging.INFO)
    try:
        return int(args.handler(args))
    except HFRemoteError as e:
        print(f"hfremote {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
