"""Where jobs run: the embedded emulator, HF_ENDPOINT, HFREMOTE_BACKEND and configure() decide."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from huggingface_hub import HfApi

import hfremote
from hfremote import remote
from hfremote.emulator import Emulator

SCRIPT = textwrap.dedent(
    """
    from hfremote import remote

    @remote(timeout="5m")
    def double(x):
        return 2 * x

    print("RESULT", double.submit(21).result())
    """
)


def run_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HFREMOTE_"))}
    base.update(
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_XET_TELEMETRY_ENABLED="false",
        **env,
    )
    return subprocess.run(
        [sys.executable, str(script)], env=base, capture_output=True, text=True, timeout=120, check=False
    )


def test_no_token_runs_on_the_embedded_emulator_with_a_notice(tmp_path: Path) -> None:
    done = run_script(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "RESULT 42" in done.stdout
    notices = [line for line in done.stderr.splitlines() if line.startswith("hfremote:")]
    assert len(notices) == 1 and "no Hugging Face token found" in notices[0] and "local emulator" in notices[0]


def test_backend_local_wins_over_a_token(tmp_path: Path) -> None:
    done = run_script(tmp_path, HF_TOKEN="hf_not_a_real_token", HFREMOTE_BACKEND="local")
    assert done.returncode == 0, done.stderr
    assert "RESULT 42" in done.stdout
    assert "HFREMOTE_BACKEND=local" in done.stderr


def test_hf_endpoint_is_used_when_set(tmp_path: Path, emulator: Emulator) -> None:
    done = run_script(tmp_path, HF_ENDPOINT=emulator.endpoint, HF_TOKEN=emulator.token)
    assert done.returncode == 0, done.stderr
    assert "RESULT 42" in done.stdout
    assert "local emulator" not in done.stderr  # no embedded emulator was started
    api = HfApi(endpoint=emulator.endpoint, token=emulator.token)
    jobs = list(api.list_jobs(namespace=emulator.user))
    assert len(jobs) == 1 and jobs[0].labels["name"] == "double"


def test_backend_hf_without_a_token_is_a_clear_error(tmp_path: Path) -> None:
    done = run_script(tmp_path, HFREMOTE_BACKEND="hf")
    assert done.returncode != 0
    assert "OptionsError" in done.stderr and "token" in done.stderr


def test_configure_checks_its_arguments() -> None:
    with pytest.raises(hfremote.OptionsError, match="backend"):
        hfremote.configure(backend="cloud")
    with pytest.raises(hfremote.OptionsError, match="poll_interval"):
        hfremote.configure(poll_interval=0)


def test_configure_points_at_an_endpoint(remote_emulator: Emulator) -> None:
    @remote(timeout="5m")
    def triple(x: int) -> int:
        return 3 * x

    assert triple.submit(5).result() == 15
    assert [job["labels"]["name"] for job in remote_emulator.jobs()] == ["triple"]


def test_remote_future_logs_survive_dropped_streams(remote_emulator: Emulator) -> None:
    @remote(timeout="5m")
    def chatty(n: int) -> int:
        import time

        for i in range(n):
            print(f"line {i}", flush=True)
            time.sleep(0.1)
        return n

    rule = remote_emulator.faults.add("drop GET /api/jobs/*/logs after=3 count=2")
    future = chatty.submit(15)
    lines = list(future.logs(follow=True))
    assert rule.fired == 2  # two streams were cut mid-way
    assert lines == [f"line {i}" for i in range(15)]
    assert future.result() == 15


def test_results_come_back_through_xet_when_plain_downloads_are_not_served(
    remote_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hfremote import _hub
    from hfremote._config import current_hub

    @remote(timeout="5m")
    def square(x: int) -> int:
        return x * x

    assert square.submit(3).result() == 9  # the plain GET of the resolve URL
    hub = current_hub()
    assert hub._plain_get
    # An endpoint that answers the resolve GET with anything but the file (or 404): Xet from then on.
    monkeypatch.setattr(_hub.Hub, "_get", lambda self, bucket_id, path: _hub._UNSERVED)
    before = len(remote_emulator.requests())
    assert square.submit(4).result() == 16
    assert not hub._plain_get
    paths = [path for _, _, path, _ in remote_emulator.requests()[before:]]
    assert any("/v1/reconstructions/" in path for path in paths)  # the Xet download ran
    assert square.submit(5).result() == 25
