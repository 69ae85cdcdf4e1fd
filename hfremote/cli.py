"""The `hfremote` command."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from .emulator import Emulator, Faults


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _emulator(args: argparse.Namespace) -> int:
    try:
        faults = [Faults.parse(spec) for spec in args.fault]
    except (TypeError, ValueError) as e:
        print(f"hfremote emulator: invalid --fault: {e}", file=sys.stderr)
        return 2
    if args.max_running is not None and args.max_running < 1:
        print("hfremote emulator: --max-running must be at least 1", file=sys.stderr)
        return 2
    emu = Emulator(
        args.state_dir,
        token=args.token,
        user=args.user,
        orgs=tuple(args.org),
        host=args.host,
        port=args.port,
        max_running=args.max_running,
        faults=list(faults),
        seed=args.seed,
    )
    # `kill` (SIGTERM) must stop the emulator as Ctrl-C does: jobs run in their own sessions and would outlive it
    signal.signal(signal.SIGTERM, _interrupt)
    emu.start()
    print(f"hfremote emulator serving on {emu.endpoint} (state in {emu.state_dir})", flush=True)
    print(f"  export HF_ENDPOINT={emu.endpoint} HF_TOKEN=<the token in {emu.state_dir / 'token'}>", flush=True)
    try:
        emu.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
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
    emu.add_argument("--token", help="the token clients must send (default: one saved in the state directory)")
    emu.add_argument("--user", default="emulator-user", help="the user name whoami answers")
    emu.add_argument("--org", action="append", default=[], help="an organization the user belongs to (repeatable)")
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
    emu.add_argument("-v", "--verbose", action="store_true", help="log every request")
    emu.set_defaults(handler=_emulator)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "verbose", False):
        logging.basicConfig(level=logging.INFO)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
