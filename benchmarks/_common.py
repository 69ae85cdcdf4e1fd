"""What every benchmark sets up first: a private HF_HOME and a quiet client, before huggingface_hub is imported."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


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


def run_child(script: str, kind: str, emu: Any, extra: list[str]) -> dict[str, Any]:
    """Run `script --child KIND` in a new process pointed at `emu`; what it wrote to its --out file."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    args = [sys.executable, script, *extra, "--child", kind, "--endpoint", emu.endpoint, "--token", emu.token]
    args += ["--namespace", emu.user, "--out", str(out)]
    proc = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"the {kind} client failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return result


def kind_of(method: str, path: str, upload: str) -> str:
    if path.startswith("/api/jobs/"):
        return "create job" if method == "POST" else "poll"
    if any(part in path for part in ("/reconstructions/", "/fetch/", "/paths-info", "/resolve/", "xet-read-token")):
        return "download result"
    return upload


def count_requests(emu: Any, start: float, end: float, upload: str) -> collections.Counter[str]:
    """The client's requests between its marks, by kind (the emulator does not log the requests it sends
    itself, e.g. to turn files jobs wrote into xorbs)."""
    return collections.Counter(
        kind_of(method, path, upload) for t, method, path, _ in emu.requests() if start <= t <= end
    )


def run_baseline(
    endpoint: str,
    token: str,
    namespace: str,
    script_text: str,
    python: str,
    count: int,
    poll: float,
    expected: Callable[[int], Any],
) -> dict[str, Any]:
    """The same work by hand, one input after the other: `run_uv_job` of a PEP 723 script that writes
    result.json under /data, `wait_for_job`, then downloading that file. Client marks, CPU and wall time."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    script = Path(tempfile.mkdtemp(prefix="hfremote-bench-")) / "square.py"
    script.write_text(script_text)
    bucket = f"{namespace}/jobs-artifacts"

    def one(x: int) -> Any:
        job = api.run_uv_job(str(script), script_args=[str(x)], python=python, namespace=namespace)
        done = api.wait_for_job(job.id, namespace=namespace, poll_interval=poll)
        assert done.status.stage == "COMPLETED", done.status
        folder = next(v.path for v in job.volumes or [] if v.mount_path == "/data")
        with tempfile.TemporaryDirectory() as tmp:
            dest = Path(tmp) / "result.json"
            api.download_bucket_files(bucket, [(f"{folder}/result.json", dest)], raise_on_missing_files=True)
            return json.loads(dest.read_text())

    assert one(0) == expected(0)  # warm-up
    start, cpu, wall = time.time(), time.process_time(), time.perf_counter()
    for x in range(1, count + 1):
        assert one(x) == expected(x)
    return {"start": start, "end": time.time(), "cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}
