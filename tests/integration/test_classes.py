"""Remote classes: the instance is built once per job (its setup runs once there) and serves the job's whole
chunk; constructor arguments travel once per run. Real jobs on the emulator, which have no hfremote."""

from __future__ import annotations

import abc
import asyncio
import inspect
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


HANDLE = Counter(10)


@remote(timeout=60)
def uses_handles(handle: Any, x: int) -> tuple[int, int, int, bool, bool]:
    passed = handle.add(x)  # a handle passed in, or held in a global: built and set up in this job
    held = HANDLE.add(x)
    plain = Counter(1)  # the class's own name is the plain class in a job
    return passed[0], passed[2], held[0], isinstance(plain, Counter), plain.ready


def test_handles_and_the_class_inside_a_job(remote_emulator: Emulator) -> None:
    assert uses_handles(Counter(20), 5) == (25, 1, 15, True, False)
    assert len(remote_emulator.jobs()) == 1  # no job starts another


@remote(timeout=60)
class Point:
    """Model code names its own class: isinstance, old-style super, classmethod factories."""

    def __init__(self, a: int) -> None:
        super(Point, self).__init__()  # noqa: UP008  (old-style, as model code has it)
        self.a = a

    @classmethod
    def make(cls, a: int) -> Point:
        return cls(a)

    def grow(self, x: int) -> tuple[int, bool]:
        other = Point.make(self.a + x)
        return other.a, isinstance(other, Point)


def test_a_class_that_names_itself(remote_emulator: Emulator) -> None:
    assert Point(1).grow(2) == (3, True)
    # Here the name is the remote class, standing for the plain one (only `super(Point, self)` needs the
    # plain class itself: the README says to write `super()`).
    assert Point.make.__self__ is Point.cls
    assert isinstance(Point.cls.__new__(Point.cls), Point) and issubclass(Point.cls, Point)


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
    assert asyncio.run(scaler.aio(4)) == 12
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


def test_a_failed_setup_keeps_one_short_traceback(remote_emulator: Emulator) -> None:
    errors = list(Broken().run.map(range(40), chunksize=40, return_exceptions=True, logs="none"))
    tracebacks = [str(e.__cause__) for e in errors]
    assert len({len(t) for t in tracebacks}) == 1, [len(t) for t in tracebacks[:3]]  # not growing per input


@remote(timeout=60, env={"MODEL_DIR": "/models"})
class Layered:
    def plain(self) -> tuple[str | None, str]:
        return os.environ.get("MODEL_DIR"), os.environ.get("WHICH", "")

    @remote(flavor="cpu-upgrade", env={"WHICH": "own"})
    def own(self) -> tuple[str | None, str]:
        return os.environ.get("MODEL_DIR"), os.environ.get("WHICH", "")


def test_a_methods_own_options_layer_over_the_class(remote_emulator: Emulator) -> None:
    handle = Layered()
    assert handle.plain() == ("/models", "")
    future = handle.own.submit()
    assert future.result(timeout=RESULT_TIMEOUT) == (None, "own")  # its own env replaces the class's
    assert future.info.flavor == "cpu-upgrade"
    assert handle.own.settings.timeout == 60  # the class's, where the method sets nothing
    assert Layered.options(timeout=90)().own.settings.timeout == 90


def wraps_nothing(fn: Any) -> Any:
    def inner(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return inner


@remote(timeout=60)
class Odd:
    @wraps_nothing
    def decorated(self, x: int) -> int:
        return x * 10

    def star(*args: Any) -> int:
        return len(args)

    def gen(self, n: int) -> Any:
        yield n

    async def later(self, n: int) -> int:
        return n


def test_methods_of_every_shape(remote_emulator: Emulator) -> None:
    assert Odd().decorated.local(3) == 30
    assert Odd().star.local(1, 2) == 3  # self, 1, 2
    with pytest.raises(OptionsError, match="generator"):
        Odd().gen(1)
    assert remote_emulator.jobs() == []
    assert Odd().later(4) == 4  # an async method: awaited in the job


@remote(timeout=60)
class Session:
    """An async setup opens what every input uses, on the job's one event loop."""

    @setup
    async def open(self) -> None:
        import asyncio

        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[int] = asyncio.Queue()

    async def put(self, x: int) -> tuple[bool, int]:
        import asyncio

        await self.queue.put(x)
        return asyncio.get_running_loop() is self.loop, self.queue.qsize()


def test_async_methods_and_an_async_setup_share_the_jobs_loop(remote_emulator: Emulator) -> None:
    assert list(Session().put.map(range(3), chunksize=3)) == [(True, 1), (True, 2), (True, 3)]


def test_setup_methods_are_checked_when_the_class_is_made() -> None:
    class NeedsPath:
        @setup
        def load(self, path: str) -> None: ...

    with pytest.raises(OptionsError, match="must take only self"):
        remote(NeedsPath)


def test_local_calls_share_one_instance_per_handle() -> None:
    handle = Counter(1)
    first = handle.add.local(0)[2]
    assert handle.bigger.local(2) == 2
    assert handle.add.local(0)[2] == first  # the handle's methods share one instance: one setup
    assert Counter(1).add.local(0)[2] == first + 1  # another handle: its own


def test_handles_copy_and_pickle_as_themselves() -> None:
    import copy
    import pickle

    handle = Counter(3)
    for twin in (copy.copy(handle), copy.deepcopy(handle), pickle.loads(pickle.dumps(handle))):
        assert isinstance(twin, hfremote.RemoteInstance) and repr(twin) == repr(handle)
    assert pickle.loads(pickle.dumps(Counter)) is Counter
    assert copy.copy(Counter) is Counter and copy.deepcopy(Counter) is Counter
    assert pickle.loads(pickle.dumps(uses_handles)) is uses_handles  # a remote function too


def test_remote_again_changes_the_options_of_the_plain_class() -> None:
    bigger = remote(flavor="cpu-upgrade")(Counter)
    assert isinstance(bigger, RemoteClass) and bigger.cls is Counter.cls
    assert bigger.settings.flavor == "cpu-upgrade"


def test_the_class_name_stands_for_the_class() -> None:
    class Sub(Counter):  # type: ignore[misc, valid-type]
        pass

    assert issubclass(Sub, Counter.cls) and issubclass(Sub, Counter)
    assert Counter[int] is Counter  # type: ignore[misc]
    assert str(inspect.signature(Counter)) == "(base: 'int', *, label: 'str' = '') -> 'None'"
    assert {"add", "bigger", "helper"} <= set(dir(Counter(1)))

    class Abstract(abc.ABC):
        @abc.abstractmethod
        def go(self) -> None: ...

    with pytest.raises(TypeError, match="abstract"):
        remote(Abstract)()
