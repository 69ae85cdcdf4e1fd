"""What every benchmark sets up first: a private HF_HOME and a quiet client, before huggingface_hub is imported."""

from __future__ import annotations

import os
import tempfile


def quiet_client_env() -> None:
    """The client reads these at import time (the benchmark's child processes inherit them)."""
    os.environ.update(
        {
            "HF_HOME": tempfile.mkdtemp(prefix="hfremote-bench-hf-home-"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_EXPERIMENTAL_WARNING": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_XET_TELEMETRY_ENABLED": "false",
        }
    )
    os.environ.pop("HF_TOKEN", None)
    os.environ.pop("HF_ENDPOINT", None)
