"""Shared fixtures: a real emulator on loopback and the real huggingface_hub client pointed at it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# The client reads these once, at import: set them before anything imports huggingface_hub.
_HOME = tempfile.mkdtemp(prefix="hfremote-tests-hf-home-")
os.environ.update(
    {
        "HF_HOME": _HOME,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_EXPERIMENTAL_WARNING": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_XET_TELEMETRY_ENABLED": "false",
    }
)
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HF_ENDPOINT", None)

from helpers import engine_lets_go, hfremote_on, patient_client  # noqa: E402
from huggingface_hub import HfApi, set_client_factory  # noqa: E402

from hfremote.emulator import Emulator  # noqa: E402

# huggingface_hub closes its client, shared by every thread, when any thread's connection is refused;
# here an earlier test's background thread reaching its stopped emulator must not cut the requests in
# flight of the test now running (see test_shared_client.py).
set_client_factory(patient_client)


@pytest.fixture(autouse=True)
def _engine_lets_go() -> Iterator[None]:
    """What a test left hfremote's engine watching ends with the test (runs whose futures nobody waited
    for, leases, owned runs): the engine would go on looking at them after their emulator stopped, and
    huggingface_hub answers a refused connection by closing its client shared by every thread, so a
    later test's own request failed with `ReadError: [Errno 9] Bad file descriptor`."""
    yield
    engine_lets_go()


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    with Emulator(tmp_path / "emulator-state", token="hf_test_token_1234567890") as emu:
        yield emu


@pytest.fixture
def api(emulator: Emulator) -> HfApi:
    return HfApi(endpoint=emulator.endpoint, token=emulator.token)


@pytest.fixture
def ns(emulator: Emulator) -> str:
    return emulator.user


@pytest.fixture
def remote_emulator(emulator: Emulator) -> Iterator[Emulator]:
    """hfremote pointed at this test's emulator (and back to the default afterwards)."""
    with hfremote_on(emulator):
        yield emulator


@pytest.fixture
def host_remote_emulator(tmp_path: Path) -> Iterator[Emulator]:
    """hfremote pointed at an emulator whose jobs run as host processes (sandbox off).

    For tests that watch jobs through files on the host (counters, markers): a sandboxed job cannot
    reach them, as a job on Hugging Face cannot.
    """
    with Emulator(tmp_path / "host-emulator-state", token="hf_test_token_host", sandbox="off") as emu, hfremote_on(emu):
        yield emu
