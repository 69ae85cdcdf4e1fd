"""The public API is exactly what hfremote/__init__.py lists, and every error hfremote raises has one root."""

from __future__ import annotations

import pickle
from concurrent.futures import Future
from importlib.metadata import version

import pytest

import hfremote
import hfremote.errors

EXPECTED = [
    "AsyncMapResults",
    "BackendError",
    "CostEstimate",
    "Deployment",
    "Executor",
    "HFRemoteError",
    "JobFailedError",
    "MapResults",
    "OptionsError",
    "PicklingError",
    "RemoteClass",
    "RemoteError",
    "RemoteFunction",
    "RemoteFuture",
    "RemoteInstance",
    "RemoteRun",
    "RemoteTraceback",
    "ScheduleInfo",
    "ScheduledFunction",
    "ScheduledRun",
    "__version__",
    "as_completed",
    "configure",
    "gather",
    "remote",
    "setup",
    "wait",
]


def test_all_is_pinned() -> None:
    assert hfremote.__all__ == EXPECTED
    assert hfremote.__all__ == sorted(hfremote.__all__)


@pytest.mark.parametrize("name", EXPECTED)
def test_every_public_name_imports(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from hfremote import {name}", namespace)
    assert namespace[name] is getattr(hfremote, name)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from hfremote import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(EXPECTED)


def test_version_is_the_distributions() -> None:
    assert hfremote.__version__ == version("hfremote")


def test_error_hierarchy() -> None:
    root = hfremote.HFRemoteError
    assert issubclass(root, Exception)
    for name in ("OptionsError", "PicklingError", "BackendError", "JobFailedError", "RemoteError"):
        assert issubclass(getattr(hfremote, name), root), name
    assert issubclass(hfremote.PicklingError, hfremote.OptionsError)
    assert issubclass(hfremote.OptionsError, ValueError)  # bad values are ValueErrors to callers that catch those
    # RemoteTraceback is a __cause__ carrying a remote traceback, not an error hfremote raises
    assert not issubclass(hfremote.RemoteTraceback, root)


def test_errors_module_matches_the_package() -> None:
    for name in hfremote.errors.__all__:
        assert getattr(hfremote, name) is getattr(hfremote.errors, name)
    raised = {n for n in hfremote.errors.__all__ if n != "RemoteTraceback"}
    assert all(issubclass(getattr(hfremote.errors, n), hfremote.HFRemoteError) for n in raised)


def test_remote_function_and_future_are_generic() -> None:
    assert hfremote.RemoteFunction[[int], str] is not None
    assert hfremote.RemoteFuture[str] is not None
    assert issubclass(hfremote.RemoteFuture, Future)


def test_job_failed_error_survives_pickling() -> None:
    error = hfremote.JobFailedError("abc", "ERROR", "boom", "https://x/jobs/abc", ["last line"])
    again = pickle.loads(pickle.dumps(error))
    assert (again.job_id, again.stage, again.message, again.url, again.log_tail) == (
        "abc",
        "ERROR",
        "boom",
        "https://x/jobs/abc",
        ["last line"],
    )
    assert str(again) == str(error)
