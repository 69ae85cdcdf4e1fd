"""`map` through injected faults: every input's result exactly once, and never two jobs for one chunk.

The emulator refuses a share of job creations, listings and result downloads (429 and 5xx, seeded), or
cuts the answer to a job creation after the job was created. The map must still return each input's
value once, and the emulator's records must hold exactly one job per (run, call) label pair, with every
input in exactly one of those jobs' chunks.
"""

from __future__ import annotations

import collections
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from helpers import hfremote_on
from huggingface_hub import BucketFile, HfApi

import hfremote
from hfremote.emulator import Emulator
from hfremote.emulator._faults import FaultRule

TOKEN = "hf_map_faults_token_1234567890"


@hfremote.remote(stream_logs=False)
def square(x: int) -> tuple[int, int]:
    return x, x * x


@pytest.fixture
def seeded_emulator(tmp_path: Path) -> Iterator[Emulator]:
    """hfremote on an emulator whose rate-based faults are drawn from a fixed seed."""
    with Emulator(tmp_path / "seeded-state", token=TOKEN, seed=1) as emu, hfremote_on(emu):
        yield emu


def _chunks_of_jobs(emulator: Emulator) -> dict[tuple[str, str], list[int]]:
    """Each job's (run, call) labels and the inputs of its chunk; asserts no pair has two jobs."""
    jobs = emulator.jobs()
    keys = collections.Counter((job["labels"]["hfremote-run"], job["labels"]["hfremote-call"]) for job in jobs)
    duplicated = {key: count for key, count in keys.items() if count != 1}
    assert not duplicated, f"jobs created more than once: {duplicated}"
    assert all(job["status"]["stage"] == "COMPLETED" for job in jobs), [job["status"] for job in jobs]
    # Read every chunk's input file back from the bucket, in one batch, to see which inputs each job ran.
    api = HfApi(endpoint=emulator.endpoint, token=emulator.token)
    with tempfile.TemporaryDirectory() as tmp:
        wanted: list[tuple[str | BucketFile, str | Path]] = [
            (f"runs/{run}/chunks/{call}/inputs.pkl", Path(tmp) / f"{run}-{call}.pkl") for run, call in keys
        ]
        api.download_bucket_files(f"{emulator.user}/hfremote", wanted, raise_on_missing_files=True)
        chunks: dict[tuple[str, str], list[int]] = {}
        for run, call in keys:
            calls: list[tuple[int, bytes]] = cloudpickle.loads((Path(tmp) / f"{run}-{call}.pkl").read_bytes())
            chunks[(run, call)] = [index for index, _ in calls]
    return chunks


def _assert_each_input_in_one_job(chunks: dict[tuple[str, str], list[int]], inputs: int) -> None:
    seen = collections.Counter(index for indexes in chunks.values() for index in indexes)
    assert sorted(seen) == list(range(inputs))
    assert {index: count for index, count in seen.items() if count != 1} == {}


def _add(emulator: Emulator, *specs: str) -> list[FaultRule]:
    return [emulator.faults.add(spec) for spec in specs]


def test_map_through_refusals_gives_every_result_once_and_one_job_per_chunk(seeded_emulator: Emulator) -> None:
    ns = seeded_emulator.user
    inputs, chunksize = 200, 4
    rules = _add(
        seeded_emulator,
        # job creation (refused before anything is created)
        f"429 POST /api/jobs/{ns} rate=0.1 retry-after=0",
        f"503 POST /api/jobs/{ns} rate=0.1",
        # the watcher's listings (not the inspect route /api/jobs/<ns>/<id>)
        f"429 GET /api/jobs/{ns} rate=0.1 retry-after=0",
        f"502 GET /api/jobs/{ns} rate=0.1",
        # the map needs only a dozen listings: one refusal for sure, whatever the threads draw
        f"503 GET /api/jobs/{ns} count=1",
        # the result downloads (one GET of the file's resolve URL each)
        "429 GET /buckets/*/resolve/* rate=0.1 retry-after=0",
        "503 GET /buckets/*/resolve/* rate=0.1",
    )
    results: list[Any] = list(square.map(range(inputs), chunksize=chunksize, ordered=False, progress=False))
    seeded_emulator.faults.clear()

    assert len(results) == inputs
    assert sorted(results) == [(x, x * x) for x in range(inputs)]
    # Each route was refused (by its 429 rule or its 5xx one: thread timing decides which draws which).
    fired = collections.Counter({(r.method, r.path): 0 for r in rules})
    fired.update({(r.method, r.path): r.fired for r in rules})
    assert all(fired.values()), fired
    refused = [s for _, m, p, s in seeded_emulator.requests() if m == "POST" and p == f"/api/jobs/{ns}" and s != 200]
    assert refused, "no job creation was refused"
    chunks = _chunks_of_jobs(seeded_emulator)
    assert len(chunks) == inputs // chunksize
    assert len({run for run, _ in chunks}) == 1
    _assert_each_input_in_one_job(chunks, inputs)


def test_map_in_order_through_refusals(seeded_emulator: Emulator) -> None:
    ns = seeded_emulator.user
    _add(
        seeded_emulator,
        f"503 POST /api/jobs/{ns} rate=0.1",
        f"429 GET /api/jobs/{ns} rate=0.1 retry-after=0",
        "500 POST /api/buckets/*/paths-info rate=0.1",
    )
    assert list(square.map(range(40), chunksize=3, max_parallel=4, progress=False)) == [(x, x * x) for x in range(40)]
    seeded_emulator.faults.clear()
    chunks = _chunks_of_jobs(seeded_emulator)
    assert len(chunks) == 14
    _assert_each_input_in_one_job(chunks, 40)


def test_lost_answers_to_job_creation_during_a_map_create_no_duplicates(seeded_emulator: Emulator) -> None:
    ns = seeded_emulator.user
    inputs = 48
    # The job is created, then the answer is cut half-way: the client must find it by its labels.
    drop = seeded_emulator.faults.add(f"drop POST /api/jobs/{ns} rate=0.3")
    results = list(square.starmap(((x,) for x in range(inputs)), chunksize=2, ordered=False, progress=False))
    seeded_emulator.faults.clear()

    assert len(results) == inputs
    assert sorted(results) == [(x, x * x) for x in range(inputs)]
    assert drop.fired > 0
    creates = [s for _, m, p, s in seeded_emulator.requests() if m == "POST" and p == f"/api/jobs/{ns}"]
    assert len(creates) == inputs // 2  # a lost answer is looked up, never re-sent
    chunks = _chunks_of_jobs(seeded_emulator)
    assert len(chunks) == inputs // 2
    _assert_each_input_in_one_job(chunks, inputs)


def test_a_result_that_cannot_be_read_fails_the_map_instead_of_hanging(
    seeded_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # hf_xet raises RuntimeError once its own retries are spent; the chunk's future must still end.
    def broken(self: Any, bucket_id: str, path: str) -> bytes | None:
        raise RuntimeError("Task error: File reconstruction error: CAS Client Error: Request error")

    monkeypatch.setattr("hfremote._hub.Hub.download", broken)
    results: list[Any] = list(square.map(range(4), chunksize=2, return_exceptions=True, progress=False))
    assert [type(r) for r in results] == [hfremote.errors.BackendError] * 4
    assert "CAS Client Error" in str(results[0])


def test_a_map_the_platform_stops_answering_says_how_to_resume_it(seeded_emulator: Emulator) -> None:
    seeded_emulator.faults.add(f"503 POST /api/jobs/{seeded_emulator.user}")
    hfremote.configure(unreachable_timeout=2)
    try:
        results = square.map(range(4), chunksize=2, progress=False)
        with pytest.raises(hfremote.errors.BackendError) as gone:
            list(results)
    finally:
        hfremote.configure(unreachable_timeout=300)
    assert f"resume={results.run_id!r}" in str(gone.value)
