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

from helpers import hfremote_on  # noqa: E402
from huggingface_hub import HfApi  # noqa: E402

from hfremote.emulator import Emulator  # noqa: E402


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
