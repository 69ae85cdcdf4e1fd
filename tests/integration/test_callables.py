"""Any callable runs remotely (partial, callable instance, method), remote functions call each other, and
exceptions come back as themselves, on the emulator with real jobs (which have no hfremote installed)."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from huggingface_hub import HfApi

import hfremote
from hfremote import RemoteFunction, remote
from hfremote.emulator import Emulator

RESULT_TIMEOUT = 120


@remote(timeout=60)
def inner(x: int) -> int:
    return x * 10


@remote(timeout=60)
def outer(x: int) -> int:
    return inner(x) + inner.local(1) + inner.submit(x).result()  # runs in the job as plain calls


@remote(timeout=60)
def countdown(n: int) -> int:
    return 0 if n == 0 else 1 + countdown(n - 1)


def test_a_remote_function_calling_others_runs_them_as_plain_calls(remote_emulator: Emulator) -> None:
    assert outer(3) == 30 + 10 + 30
    assert countdown.submit(3).result(timeout=RESULT_TIMEOUT) == 3
    assert len(remote_emulator.jobs()) == 2  # one job each: the inner calls did not start jobs


@remote.schedule("@daily", timeout=60)
def nightly(x: int) -> int:
    return x + 1


@remote(timeout=60)
def uses_a_scheduled_function(x: int) -> int:
    return nightly.local(x) + nightly.local(0)


def test_a_scheduled_function_used_inside_a_job_is_a_plain_function(remote_emulator: Emulator) -> None:
    assert uses_a_scheduled_function(1) == 3
    assert len(remote_emulator.jobs()) == 1


def scale(factor: int, x: int) -> int:
    return factor * x


class Model:
    def __init__(self, weight: int) -> None:
        self.weight = weight
        self._options = "the model's own"  # the same name as a RemoteFunction attribute

    def __call__(self, x: int) -> int:
        return self.weight * x


class Trainer:
    def __init__(self, base: int) -> None:
        self.base = base

    @remote(timeout=60)
    def fit(self, steps: int) -> int:
        return self.base + steps


def test_partials_and_callable_instances(remote_emulator: Emulator, api: HfApi) -> None:
    doubled = remote(functools.partial(scale, 2))
    assert doubled(21) == 42
    assert "scale" in repr(doubled)
    builtin = remote(functools.partial(pow, 2))
    future = builtin.submit(10)
    assert future.result(timeout=RESULT_TIMEOUT) == 1024
    assert (api.inspect_job(job_id=future.job_id, namespace=remote_emulator.user).labels or {})["name"] == "pow"
    model = remote(Model(3))
    assert list(model.map([1, 2])) == [3, 6]
    assert "Model" in repr(model)


def test_a_remote_method_binds_like_a_method(remote_emulator: Emulator) -> None:
    trainer = Trainer(100)
    assert trainer.fit(3) == 103
    assert trainer.fit.submit(5).result(timeout=RESULT_TIMEOUT) == 105
    assert list(trainer.fit.map([1, 2])) == [101, 102]
    assert Trainer.fit.local(trainer, 1) == 101
    assert isinstance(Trainer.__dict__["fit"], RemoteFunction)


class DataError(ValueError):
    """Like httpx's HTTPStatusError: keyword-only constructor arguments, so pickle cannot re-create it."""

    def __init__(self, message: str, *, row: int, where: str) -> None:
        super().__init__(message)
        self.row, self.where = row, where


class HoldsLock(Exception):
    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code
        self.lock = __import__("threading").Lock()


@remote(timeout=60)
def load(rows: int) -> int:
    raise DataError(f"bad value in row {rows}", row=rows, where="csv")


@remote(timeout=60)
def locked() -> int:
    raise HoldsLock("held", code=7)


def test_an_exception_with_keyword_only_arguments_comes_back_as_itself(remote_emulator: Emulator) -> None:
    with pytest.raises(DataError) as caught:
        load(17)
    error = caught.value
    assert type(error) is DataError
    assert (error.row, error.where, str(error)) == (17, "csv", "bad value in row 17")
    assert isinstance(error.__cause__, hfremote.RemoteTraceback)
    with pytest.raises(HoldsLock) as held:
        locked.submit().result(timeout=RESULT_TIMEOUT)
    assert held.value.code == 7 and not hasattr(held.value, "lock")
    assert any("lock" in note for note in getattr(held.value, "__notes__", []))


def test_unbound_remote_method_keeps_its_type() -> None:
    unbound: Any = Trainer.fit
    assert unbound is Trainer.__dict__["fit"]
