"""Remote classes: the instance is built once per job (its setup runs once there) and serves the job's whole
chunk; constructor arguments travel once per run. Real jobs on the emulator, which have no hfremote."""

from __future__ import annotations

import os
from typing import Any

import pytest
from huggingface_hub import HfApi

import hfremote
from hfremote import OptionsError, RemoteClass, RemoteFunction, remote, setup
from hfremote.emulator import Emulator

RESULT_TIMEOUT = 120
SETUPS = 0  # in a job: how many times a setup ran in that job's process


@remote(timeout=60)
class Counter:
    """Counts its setups: each result says which job ran it and how many setups that job's process saw."""

    def __init__(self, base: int, *, label: str = "") -> None:
        self.base, self.label = base, label
        self.ready = False

    @setup
    def load(self) -> None:
        global SETUPS
        SETUPS += 1
        self.ready = True

    def add(self, x: int) -> tuple[int, str, int, bool]:
        return self.base + x, os.environ.get("JOB_ID", "here"), SETUPS, self.ready

    @remote(flavor="cpu-upgrade", timeout=60)
    def bigger(self, x: int) -> int:
        return self.base * x

    @staticmethod
    def helper(x: int) -> int:
        return -x

    @property
    def doubled(self) -> int:
        return self.base * 2


class Base:
    def __init__(self) -> None:
        self.steps: list[str] = []

    @setup
    def first(self) -> None:
        self.steps.append("base")


@remote(timeout=60)
class Derived(Base):
    @setup
    def second(self) -> None:
        self.steps.append("derived")

    def steps_seen(self, _: int) -> list[str]:
        return self.steps


@remote(timeout=60)
class Broken:
    def __init__(self) -> None:
        global SETUPS
        SETUPS += 1
        raise RuntimeError(f"no weights (setup number {SETUPS} in this job)")

    def run(self, x: int) -> int:
        return x


def test_a_map_builds_the_instance_once_per_job(remote_emulator: Emulator) -> None:
    out = list(Counter(100).add.map(range(100), chunksize=25, max_parallel=4))
    assert [value for value, *_ in out] == [100 + i for i in range(100)]
    jobs = {job for _, job, _, _ in out}
    assert len(jobs) == 4 == len(remote_emulator.jobs())
    # Every input of each job saw exactly one setup in its process: 4 setups in all.
    assert {(setups, ready) for _, _, setups, ready in out} == {(1, True)}


def test_one_call_is_one_job_and_methods_keep_their_options(remote_emulator: Emulator, api: HfApi) -> None:
    counter = Counter(7, label="x")
    value, job, setups, ready = counter.add(1)
    assert (value, setups, ready) == (8, 1, True)
    future = counter.bigger.submit(6)
    assert future.result(timeout=RESULT_TIMEOUT) == 42
    assert api.inspect_job(job_id=job, namespace=remote_emulator.user).flavor == "cpu-basic"
    assert future.info.flavor == "cpu-upgrade"  # the method's own @remote options
    assert counter.helper(5) == -5
    jobs = api.list_jobs(namespace=remote_emulator.user)
    assert sorted((j.labels or {})["name"] for j in jobs) == ["add", "bigger", "helper"]
    labels = api.inspect_job(job_id=job, namespace=remote_emulator.user).labels or {}
    assert labels["hfremote-function"].endswith("Counter-add")


def test_setups_of_base_classes_run_first(remote_emulator: Emulator) -> None:
    assert Derived().steps_seen(0) == ["base", "derived"]
    assert Derived().steps_seen.local(0) == ["base", "derived"]


def test_a_failed_setup_fails_the_jobs_inputs_once(remote_emulator: Emulator) -> None:
    out = list(Broken().run.map(range(3), chunksize=3, return_exceptions=True))
    assert all(isinstance(e, RuntimeError) for e in out)
    assert {str(e) for e in out} == {"no weights (setup number 1 in this job)"}  # not tried again per input


@remote(timeout=60)
class Scorer:
    def __init__(self, weights: bytes) -> None:
        self.weights = weights

    def score(self, x: int) -> int:
        return len(self.weights) + x


def test_constructor_arguments_travel_once_per_run(remote_emulator: Emulator, api: HfApi) -> None:
    weights = os.urandom(2 << 20)
    results = Scorer.options(timeout=30)(weights).score.map(range(4), chunksize=1)
    assert list(results) == [len(weights) + i for i in range(4)]
    files = api.list_bucket_tree(f"{remote_emulator.user}/hfremote", f"runs/{results.run_id}", recursive=True)
    sizes = {f.path: getattr(f, "size", 0) for f in files}
    inputs = [size for path, size in sizes.items() if path.endswith("inputs.pkl")]
    assert len(inputs) == 4 and max(inputs) < 1000  # not in the inputs: in the run's function file, once
    assert sizes[f"runs/{results.run_id}/shared/function.pkl"] > len(weights)


@remote(timeout=60)
def uses_a_remote_class(x: int) -> tuple[int, int]:
    counter = Counter(10)  # in the job: a plain instance, set up there; no job starts another
    value, _, setups, _ = counter.add(x)
    return value, counter.add.submit(x).result()[2] + setups


def test_a_remote_class_used_inside_a_job_is_a_plain_class(remote_emulator: Emulator) -> None:
    assert uses_a_remote_class(5) == (15, 2)  # one instance, one setup in that job's process
    assert len(remote_emulator.jobs()) == 1


@remote(timeout=60)
class Scaler:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __call__(self, x: int) -> int:
        return self.factor * x


def test_a_callable_class_is_called_like_a_remote_function(remote_emulator: Emulator) -> None:
    scaler = Scaler(3)
    assert scaler(2) == 6
    assert list(scaler.map([1, 2, 3], chunksize=3)) == [3, 6, 9]
    assert scaler.submit(5).result(timeout=RESULT_TIMEOUT) == 15
    assert scaler.local(1) == 3
    with pytest.raises(TypeError, match="missing a required argument"):
        scaler()
    with pytest.raises(TypeError, match="not callable"):
        Counter(1)(2)


def test_wrong_use_is_refused_here_before_any_job(remote_emulator: Emulator) -> None:
    with pytest.raises(TypeError, match=r"Counter\(\): missing a required argument: 'base'"):
        Counter()
    with pytest.raises(TypeError, match="too many positional arguments"):
        Counter(1).add(1, 2)
    with pytest.raises(AttributeError, match="has no method 'nothing'"):
        Counter(1).nothing  # noqa: B018
    with pytest.raises(AttributeError, match="is not a method"):
        Counter(1).doubled  # noqa: B018
    with pytest.raises(AttributeError):
        Counter(1)._private  # noqa: B018
    with pytest.raises(OptionsError, match="timeout"):
        Counter.options(timeout="soon")
    with pytest.raises(OptionsError, match="flavor"):
        Counter.options(flavor="no-such-gpu")(1).add(1)
    assert remote_emulator.jobs() == []


def test_handles_and_reprs_show_no_argument_values() -> None:
    handle = Counter(12345, label="hf_secret_token_value")
    assert "12345" not in repr(handle) and "hf_secret" not in repr(handle)
    assert repr(handle) == "<remote Counter(int, label=...): built in each job>"
    assert isinstance(Counter, RemoteClass) and isinstance(handle.add, RemoteFunction)
    assert handle.add is handle.add
    assert "Counter.add" in repr(handle.add)


def test_local_calls_build_one_instance_here() -> None:
    handle = Counter(1)
    first: Any = handle.add.local(1)
    second: Any = handle.add.local(2)
    assert (first[0], second[0]) == (2, 3)
    assert first[1] == "here" and second[3] is True
    assert second[2] == first[2]  # the same instance: setup ran once here


def test_remote_on_a_class_is_exported() -> None:
    assert hfremote.setup is setup
    with pytest.raises(TypeError, match="marks a method"):
        setup(3)  # type: ignore[type-var]
