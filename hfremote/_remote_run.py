"""Runs you can come back to: a call or a map, found again by its run id from any process.

    RemoteRun.attach(run_id)         the run's chunks (its file listing) and jobs (one listing by label)
        .results()                   every result in input order, waiting for the jobs still running
        .cancel()                    its unfinished jobs
    f.map(inputs, resume=run_id)     runs only the inputs with no result and no running job

What a run has is read from the platform, never from local state: the chunk folders say which inputs
were uploaded (a chunk is named after its inputs), the result files which have finished, the jobs
labelled with the run id which are still running.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from huggingface_hub import JobInfo

from ._config import current_hub, lease_seconds
from ._engine import ACTIVE, engine
from ._future import ChunkFuture, decode_results
from ._hub import Hub
from ._run import CALL_LABEL, RUN_LABEL, Layout, chunk_indexes, chunk_round, lease_ttl
from .errors import HFRemoteError

_READERS = 8
_MAX_SWEEP_WAIT = 600.0  # seconds a sweep may wait to see whether a lease changes
log = logging.getLogger("hfremote")


@dataclass
class RunState:
    """What the platform holds of a run."""

    chunks: set[str] = field(default_factory=set)  # every chunk uploaded
    launched: set[str] = field(default_factory=set)  # the chunks that have had a job
    outcomes: dict[int, tuple[bool, Any]] = field(default_factory=dict)  # inputs with a result
    running: list[ChunkFuture] = field(default_factory=list)  # chunks whose job is still unfinished
    jobs: list[JobInfo] = field(default_factory=list)
    lease_ttl: float | None = None  # the ttl its jobs read when they started (None: no lease in force)


def read_run(hub: Hub, namespace: str, run_id: str, code_files: dict[str, str] | None = None) -> RunState:
    """A run's chunks, results and unfinished jobs, as the platform has them."""
    layout = Layout.of_run(run_id)
    bucket = hub.bucket(namespace)
    state = RunState()
    with_results: set[str] = set()
    prefix = f"{layout.folder}/chunks/"
    # The jobs first, then the files: a job that ends between the two looks has its result listed. (In the
    # other order it would be seen neither running nor done, and its inputs would run again.)
    state.jobs = hub.list_jobs(namespace, {RUN_LABEL: run_id})
    for path in hub.list_files(bucket, prefix):
        name, _, file = path[len(prefix) :].partition("/")
        if chunk_indexes(name) is None:
            continue
        state.chunks.add(name)
        if file == "results.pkl":
            with_results.add(name)
    state.lease_ttl = lease_ttl(hub.download(bucket, layout.lease))
    if not state.chunks and not state.jobs:
        raise HFRemoteError(f"no run {run_id!r} in {namespace}: check the id (it is printed when a run starts)")
    running: dict[str, JobInfo] = {}  # a chunk's oldest unfinished job (two processes may both have made one)
    for info in sorted(state.jobs, key=created_order, reverse=True):
        chunk = (info.labels or {}).get(CALL_LABEL, "")
        if chunk_indexes(chunk) is not None:
            state.launched.add(chunk)
            if info.status.stage in ACTIVE:
                running[chunk] = info
    name = next((j.labels or {}).get("name", "") for j in state.jobs) if state.jobs else ""
    for chunk, info in running.items():
        indexes = list(chunk_indexes(chunk) or ())
        state.running.append(ChunkFuture(hub, namespace, info, run_id, chunk, name, indexes, layout))
    done = sorted((c for c in with_results if c not in {f.call for f in state.running}), key=chunk_round)

    def read(chunk: str) -> dict[int, tuple[bool, Any]]:
        return decode_results(hub.download(bucket, layout.results(chunk)), code_files)

    with ThreadPoolExecutor(_READERS, thread_name_prefix="hfremote-attach") as pool:
        for outcomes in pool.map(read, done):  # in round order: a retry's result wins
            state.outcomes.update(outcomes)
    return state


def created_order(info: JobInfo) -> tuple[float, str]:
    """Oldest first; the id breaks ties, so every process picks the same job of two."""
    return (info.created_at.timestamp() if info.created_at else 0.0, info.id)


def first_job(hub: Hub, namespace: str, run_id: str, chunk: str, mine: JobInfo) -> JobInfo:
    """The one job a chunk keeps when two processes resuming the same run both made one: the oldest.
    The other one is cancelled at once by the process that made it."""
    jobs = [j for j in hub.list_jobs(namespace, {RUN_LABEL: run_id, CALL_LABEL: chunk}) if j.status.stage != "CANCELED"]
    keep = min([mine, *jobs], key=created_order)
    if keep.id != mine.id:
        engine().cancel_job(hub, namespace, mine.id)
        log.info("hfremote: chunk %s of run %s already had job %s: cancelled %s", chunk, run_id, keep.id, mine.id)
    return keep


class RemoteRun:
    """A run (one call or a whole map) started by this or another process, found again by its id."""

    def __init__(self, hub: Hub, namespace: str, run_id: str, state: RunState) -> None:
        self._hub, self.namespace, self.run_id, self._state = hub, namespace, run_id, state

    @classmethod
    def attach(cls, run_id: str, namespace: str | None = None) -> RemoteRun:
        """The run with this id (printed when it started; `.run_id` of a map's results)."""
        if not isinstance(run_id, str) or not run_id:
            raise TypeError(f"run_id={run_id!r} must be a run id such as '20261205T081530-1a2b3c'")
        hub = current_hub()
        ns = hub.namespace(namespace)
        return cls(hub, ns, run_id, read_run(hub, ns, run_id))

    @property
    def jobs(self) -> list[JobInfo]:
        """The run's jobs, as they were when attached."""
        return list(self._state.jobs)

    def indexes(self) -> list[int]:
        """The inputs the run uploaded, in order."""
        return sorted({i for chunk in self._state.chunks for i in chunk_indexes(chunk) or ()})

    def results(self, *, return_exceptions: bool = False) -> Iterator[Any]:
        """Every result of the run in input order, waiting for the jobs still running.

        An input that raised raises here (or is yielded, with `return_exceptions`); so does one whose job
        ended without its result, or that never got a job: resume the map to run those.
        """
        state = self._state
        waiting = {i: future for future in state.running for i in future.indexes}
        release = None
        if state.running and state.lease_ttl is not None:  # keep the jobs waited for alive, as their client
            # would (not a detached run's), renewed as often as they expect (they read the ttl when they start)
            bucket, lease = self._hub.bucket(self.namespace), Layout.of_run(self.run_id).lease
            release = engine().hold_lease(self._hub, bucket, lease, min(state.lease_ttl, lease_seconds()), now=True)
        for future in state.running:
            engine().watch(future)
        try:
            for index in self.indexes():
                outcome = state.outcomes.get(index)
                if outcome is None and index in waiting:
                    state.outcomes.update(waiting[index].result())
                    outcome = state.outcomes.get(index)
                if outcome is None:
                    outcome = (
                        False,
                        HFRemoteError(
                            f"input {index} of run {self.run_id} has no result and no job running it (its job failed "
                            f"or was never created): resume the map with f.map(inputs, resume={self.run_id!r})"
                        ),
                    )
                ok, value = outcome
                if not ok and not return_exceptions:
                    raise value
                yield value
        finally:
            if release is not None:
                release()

    def cancel(self) -> int:
        """Cancel the run's unfinished jobs; how many."""
        jobs = self._hub.list_jobs(self.namespace, {RUN_LABEL: self.run_id}, list(ACTIVE))
        for info in jobs:
            engine().cancel_job(self._hub, self.namespace, info.id)
        engine().flush()
        return len(jobs)

    def __repr__(self) -> str:
        return f"<RemoteRun {self.run_id} chunks={len(self._state.chunks)} running={len(self._state.running)}>"


def cancel_stale_runs(hub: Hub, namespace: str, wait: Callable[[float], object] = time.sleep) -> int:
    """Cancel the unfinished jobs of runs whose client stopped renewing their lease (it was killed).

    The backstop for a platform whose mounts do not follow the bucket (a job could not see its lease go
    stale). Judged by the lease not changing for half its ttl (two renewals missed), never by comparing
    clocks of two machines; so a process must live that long (60 s by default) for its sweep to act.
    Detached runs have no lease and are never touched. How many jobs were cancelled.
    """
    bucket = hub.bucket(namespace)

    def active_runs() -> dict[str, list[JobInfo]]:
        runs: dict[str, list[JobInfo]] = {}
        for info in hub.list_jobs(namespace, {}, list(ACTIVE)):
            layout = Layout.of_job(info) if RUN_LABEL in (info.labels or {}) else None
            if layout is not None and layout.folder.startswith("runs/"):
                runs.setdefault(layout.lease, []).append(info)
        return runs

    # Two renewal periods (ttl/4 each) must pass unseen: a lease renewed less often than that cannot be
    # judged within the wait, and is left alone rather than misjudged.
    seen = {lease: hub.download(bucket, lease) for lease in active_runs()}
    judged = {
        lease: data for lease, data in seen.items() if (lease_ttl(data) or _MAX_SWEEP_WAIT * 3) / 2 <= _MAX_SWEEP_WAIT
    }
    if not judged:
        return 0
    wait(max((lease_ttl(data) or 0.0) / 2 for data in judged.values()))
    cancelled = 0
    for lease, jobs in active_runs().items():
        before = judged.get(lease)
        if lease_ttl(before) is None or hub.download(bucket, lease) != before:
            continue  # no lease (detached, or too new to judge), or a client renewing it
        for info in jobs:
            engine().cancel_job(hub, namespace, info.id)
        cancelled += len(jobs)
        log.warning(
            "hfremote: cancelled %d job(s) of run %s: its client stopped renewing the run's lease",
            len(jobs),
            (jobs[0].labels or {}).get(RUN_LABEL),
        )
    engine().flush()
    return cancelled
