"""The run verbs of the `hfremote` command: ps, logs, cancel, result, attach, gc, hardware.

They look at runs, not jobs: a run (one call or one map) is every job labelled with its run id
(`hfremote-run`) and its folder `runs/<run id>/` in the `{namespace}/hfremote` bucket. RUN|JOB
arguments accept either a run id (`20261205T081530-1a2b3c`) or a job id.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from . import _console
from .errors import HFRemoteError

if TYPE_CHECKING:
    from huggingface_hub import JobInfo

    from ._hub import Hub

RUN_ID = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{6}$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class CommandError(HFRemoteError):
    """A command's own refusal: printed as `hfremote <verb>: <message>`, exit status 2."""


def require_backend(verb: str) -> None:
    """Refuse when the command would talk to a throwaway emulator that dies with it (no token, no endpoint)."""
    if os.environ.get("HF_ENDPOINT"):
        return
    if os.environ.get("HFREMOTE_BACKEND") != "local":
        from huggingface_hub import get_token

        if get_token():
            return
    raise CommandError(
        "no Hugging Face token and no HF_ENDPOINT, so this would use a throwaway emulator that stops with this "
        "command. Run `hf auth login` (or set HF_TOKEN) to use Hugging Face Jobs, or start `hfremote emulator` "
        f"in another terminal and set HF_ENDPOINT and HF_TOKEN as it prints, then run `hfremote {verb}` again."
    )


def _hub() -> tuple[Hub, str]:
    from ._config import current_hub

    hub = current_hub()
    return hub, hub.namespace()


# -- hardware ----------------------------------------------------------------------------------------
def hardware(args: argparse.Namespace) -> int:
    require_backend("hardware")
    hub, _ = _hub()
    table = hub.hardware()
    if args.json:
        print(
            json.dumps(
                {
                    name: {"price_per_hour_usd": row["price_per_minute"] * 60, "name": row["pretty"]}
                    for name, row in table.items()
                },
                indent=1,
            )
        )
        return 0
    rows = [("FLAVOR", "NAME", "PRICE/HOUR")]
    rows += [(name, str(row["pretty"] or ""), f"${row['price_per_minute'] * 60:.2f}") for name, row in table.items()]
    _table(rows)
    return 0


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


# -- ps ----------------------------------------------------------------------------------------------
def _runs(hub: Hub, namespace: str) -> dict[str, list[JobInfo]]:
    from ._run import RUN_LABEL

    runs: dict[str, list[JobInfo]] = {}
    for info in hub.list_jobs(namespace, {}):
        run_id = (info.labels or {}).get(RUN_LABEL)
        if run_id:
            runs.setdefault(run_id, []).append(info)
    return runs


def job_cost(info: JobInfo, prices: dict[str, dict[str, Any]], now: float | None = None) -> float:
    """A job's cost so far: its flavor's price times its running time."""
    price = prices.get(info.flavor or "", {}).get("price_per_minute") or 0.0
    if info.started_at is None:
        return 0.0
    end = info.finished_at.timestamp() if info.finished_at is not None else (now or time.time())
    return float(price) * max(0.0, end - info.started_at.timestamp()) / 60.0


def summary(run_id: str, jobs: list[JobInfo], prices: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from ._engine import ACTIVE
    from ._run import FUNCTION_LABEL

    stages: dict[str, int] = {}
    for info in jobs:
        stage = str(info.status.stage)
        stages[stage] = stages.get(stage, 0) + 1
    labels = jobs[0].labels or {}
    started = min((j.created_at for j in jobs if j.created_at is not None), default=None)
    return {
        "run_id": run_id,
        "function": labels.get(FUNCTION_LABEL) or labels.get("name", ""),
        "jobs": stages,
        "active": any(str(j.status.stage) in ACTIVE for j in jobs),
        "started": started.isoformat() if started else None,
        "cost_usd": sum(job_cost(j, prices) for j in jobs),
    }


def ps(args: argparse.Namespace) -> int:
    require_backend("ps")
    hub, namespace = _hub()
    prices = hub.hardware()
    rows = [summary(run_id, jobs, prices) for run_id, jobs in _runs(hub, namespace).items()]
    rows = [row for row in rows if args.all or row["active"]]
    rows.sort(key=lambda row: row["started"] or "", reverse=True)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no runs running" + ("" if args.all else " (`hfremote ps --all` shows finished runs too)"))
        return 0
    table = [("RUN", "FUNCTION", "JOBS", "STARTED", "COST")]
    for row in rows:
        jobs = " ".join(f"{stage.lower()}={count}" for stage, count in sorted(row["jobs"].items()))
        started = (
            datetime.fromisoformat(row["started"]).astimezone().strftime("%Y-%m-%d %H:%M") if row["started"] else "-"
        )
        table.append((row["run_id"], row["function"], jobs, started, _console.format_cost(row["cost_usd"])))
    _table(table)
    return 0


# -- RUN|JOB ---------------------------------------------------------------------------------------
def _target(hub: Hub, namespace: str, ident: str, stages: list[str] | None = None) -> tuple[str | None, list[JobInfo]]:
    """(run id, its jobs) for a run id, or (None, [the job]) for a job id."""
    from ._run import RUN_LABEL

    job_id = ident.split("/")[-1]  # ("namespace/id" as `hf jobs` shows it)
    if not job_id or not job_id.replace("-", "").replace("_", "").isalnum():
        raise CommandError(f"{ident!r} is neither a run id (20261205T081530-1a2b3c) nor a job id: see `hfremote ps`")
    if RUN_ID.match(ident):
        jobs = hub.list_jobs(namespace, {RUN_LABEL: ident}, stages)
        if not jobs and stages is None:
            raise CommandError(f"no run {ident!r} in {namespace} (`hfremote ps --all` lists the runs)")
        return ident, sorted(jobs, key=lambda j: j.created_at or datetime.min.replace(tzinfo=timezone.utc))
    try:
        return None, [hub.inspect(namespace, job_id, tries=2)]
    except HFRemoteError as e:
        raise CommandError(f"no run or job {ident!r} in {namespace}: {e}") from None


def logs(args: argparse.Namespace) -> int:
    from ._console import Console
    from ._run import CALL_LABEL

    require_backend("logs")
    hub, namespace = _hub()
    _, jobs = _target(hub, namespace, args.target)
    console = Console(raw=args.raw)
    many = len(jobs) > 1

    def prefix(info: JobInfo) -> str:
        return f"[{(info.labels or {}).get(CALL_LABEL, info.id[:8])}] " if many else ""

    if not args.follow:
        for info in jobs:
            console.job_lines(hub.log_stream(namespace, info.id, False), prefix(info))
        console.close()
        return 0
    from ._engine import ACTIVE

    def follow(info: JobInfo) -> None:
        console.job_lines(hub.log_stream(namespace, info.id, info.status.stage in ACTIVE), prefix(info))

    _each(jobs, follow)
    console.close()
    return 0


def _each(jobs: Iterable[JobInfo], work: Any) -> None:
    """`work(job)` for every job at once (following logs waits on each); the first error is raised."""
    jobs = list(jobs)
    if not jobs:
        return
    with concurrent.futures.ThreadPoolExecutor(min(16, len(jobs)), thread_name_prefix="hfremote-cli") as pool:
        for future in [pool.submit(work, info) for info in jobs]:
            future.result()


def cancel(args: argparse.Namespace) -> int:
    from ._engine import ACTIVE

    require_backend("cancel")
    hub, namespace = _hub()
    run_id, jobs = _target(hub, namespace, args.target)
    active = [info for info in jobs if info.status.stage in ACTIVE]
    _each(active, lambda info: hub.cancel(namespace, info.id))
    what = f"run {run_id}" if run_id else f"job {jobs[0].id}"
    if not active:
        print(f"{what} has no unfinished job: nothing to cancel")
    else:
        print(f"cancelled {len(active)} job(s) of {what}" if run_id else f"cancelled {what}")
    return 0


def _values(args: argparse.Namespace) -> tuple[str, list[tuple[int, bool, Any]]]:
    """(what, [(input index, ok, value or exception)]) of a run or a job, waiting for jobs still running."""
    from ._future import RemoteFuture
    from ._remote_run import RemoteRun

    _, namespace = _hub()
    if RUN_ID.match(args.target):
        run = RemoteRun.attach(args.target, namespace)
        values = run.results(return_exceptions=True)
        return f"run {args.target}", [
            (index, not isinstance(v, BaseException), v) for index, v in zip(run.indexes(), values, strict=False)
        ]
    future = RemoteFuture.attach(args.target, namespace)
    try:
        return f"job {future.job_id}", [(future.index or 0, True, future.result())]
    except Exception as e:
        return f"job {future.job_id}", [(future.index or 0, False, e)]


def result(args: argparse.Namespace) -> int:
    require_backend("result")
    return _print_values(*_values(args), args.output)


def _print_values(what: str, values: list[tuple[int, bool, Any]], output: str | None) -> int:
    from ._console import show_error

    failed = [(i, v) for i, ok, v in values if not ok]
    if output:
        import cloudpickle

        data = [v for _, ok, v in values if ok]
        with open(output, "wb") as f:
            cloudpickle.dump(data[0] if len(values) == 1 and data else data, f)
        print(f"wrote {len(data)} value(s) of {what} to {output}", file=sys.stderr)
    elif len(values) == 1 and not failed:
        print(repr(values[0][2]))
    else:
        for index, ok, value in values:
            if ok:
                print(f"[{index}] {value!r}")
    for index, error in failed:
        show_error(error, f"input {index} of {what}" if len(values) > 1 else what)
    return 1 if failed else 0


def attach(args: argparse.Namespace) -> int:
    from ._console import Console
    from ._engine import ACTIVE

    require_backend("attach")
    hub, namespace = _hub()
    if not RUN_ID.match(args.target):
        raise CommandError(f"{args.target!r} is not a run id (such as 20261205T081530-1a2b3c): see `hfremote ps`")
    run_id, jobs = _target(hub, namespace, args.target)
    active = [info for info in jobs if info.status.stage in ACTIVE]
    print(f"hfremote: attached to run {run_id}: {len(active)} of {len(jobs)} job(s) unfinished", file=sys.stderr)
    console = Console(raw=args.raw)
    from ._run import CALL_LABEL

    def follow(info: JobInfo) -> None:
        prefix = f"[{(info.labels or {}).get(CALL_LABEL, info.id[:8])}] " if len(active) > 1 else ""
        try:
            console.job_lines(hub.log_stream(namespace, info.id, True), prefix)
        except Exception as e:  # the logs are a courtesy: the results are what attach waits for
            console.note(f"stopped following the logs of job {info.id}: {e}")

    threads = [threading.Thread(target=follow, args=(info,), daemon=True) for info in active]
    try:  # a Ctrl-C as soon as the first log line shows is a detach too
        for thread in threads:
            thread.start()
        code = _print_values(*_values(args), None)
        deadline = time.monotonic() + 10
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        console.close()
        return code
    except KeyboardInterrupt:
        console.close()
        print(
            f"\nhfremote: detached; run {run_id} keeps running (`hfremote cancel {run_id}` stops it)", file=sys.stderr
        )
        return 130


# -- gc --------------------------------------------------------------------------------------------
def parse_age(text: str) -> timedelta:
    m = _DURATION.match(text.strip())
    if not m:
        raise CommandError(f"--older-than {text!r}: use a number and a unit, such as 12h, 7d or 2w")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


def run_started(run_id: str) -> datetime | None:
    try:
        return datetime.strptime(run_id[:15], "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def gc(args: argparse.Namespace) -> int:
    """Delete the folders of finished runs older than --older-than; never a running run's, never a schedule's."""
    from ._engine import ACTIVE
    from ._run import LEASE_FILE, lease_ttl

    require_backend("gc")
    age = parse_age(args.older_than)
    hub, namespace = _hub()
    bucket = hub.bucket(namespace)
    files = hub.call("listing runs/", lambda: list(hub.api.list_bucket_tree(bucket, prefix="runs/", recursive=True)))
    folders: dict[str, list[tuple[str, int]]] = {}
    for item in files:
        if getattr(item, "type", "file") != "file":
            continue
        run_id = item.path.split("/")[1] if item.path.count("/") >= 2 else ""
        folders.setdefault(run_id, []).append((item.path, int(getattr(item, "size", 0) or 0)))
    active = {run_id for run_id, jobs in _runs(hub, namespace).items() if any(j.status.stage in ACTIVE for j in jobs)}
    cutoff = datetime.now(timezone.utc) - age
    chosen, kept_running, kept_young, kept_held = [], 0, 0, 0
    for run_id, paths in sorted(folders.items()):
        started = run_started(run_id)
        if started is None:
            continue  # not a folder hfremote made
        if run_id in active:
            kept_running += 1
            continue
        if started > cutoff:
            kept_young += 1
            continue
        lease = hub.download(bucket, f"runs/{run_id}/shared/{LEASE_FILE}")
        if lease_ttl(lease) is not None and _renewed_recently(lease):
            kept_held += 1  # a client holds it: a map between two launches has no job for a moment
            continue
        chosen.append((run_id, paths))
    count = sum(len(paths) for _, paths in chosen)
    size = sum(s for _, paths in chosen for _, s in paths)
    verb = "would free" if args.dry_run else "freed"
    for run_id, paths in chosen:
        doing = "would delete" if args.dry_run else "deleting"
        print(f"{doing} runs/{run_id}/ ({len(paths)} files, {_bytes(sum(s for _, s in paths))})")
        if not args.dry_run:
            hub.delete(bucket, [p for p, _ in paths])
    print(
        f"{verb} {len(chosen)} run folder(s), {count} files, {_bytes(size)}; kept {kept_running} running, "
        f"{kept_held} held by a live client and {kept_young} newer than {args.older_than}; "
        "scheduled functions' folders (schedules/) are never touched"
    )
    return 0


def _renewed_recently(lease: bytes | None) -> bool:
    try:
        record = json.loads(lease or b"{}")
        return bool(time.time() - float(record["renewed"]) < 3 * float(record["ttl"]))
    except (ValueError, KeyError, TypeError):
        return False


def _bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"
