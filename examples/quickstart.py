"""Quickstart: an offline Hugging Face Jobs platform, driven by the real huggingface_hub client.

    uv run examples/quickstart.py

Until `@remote` lands, this shows the emulator that hfremote runs on when no token is set: a job runs,
its logs stream back, and a file it writes under /data comes back from the artifacts bucket.
"""

from __future__ import annotations

import os
import tempfile
import textwrap
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_EXPERIMENTAL_WARNING", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from huggingface_hub import HfApi

from hfremote.emulator import Emulator


def main() -> None:
    with Emulator() as emu, tempfile.TemporaryDirectory() as tmp:
        api = HfApi(endpoint=emu.endpoint, token=emu.token)
        ns = api.whoami()["name"]
        print(f"emulator on {emu.endpoint}, user {ns!r}, {len(api.list_jobs_hardware())} hardware flavors")

        job = api.run_job(image="python:3.12", command=["python", "-c", "print(sum(range(10)))"], namespace=ns)
        for line in api.fetch_job_logs(job_id=job.id, namespace=ns, follow=True):
            print(f"[{job.id[:8]}] {line}")
        print("stage:", api.inspect_job(job_id=job.id, namespace=ns).status.stage)

        script = Path(tmp) / "square.py"
        script.write_text(
            textwrap.dedent("""\
            # /// script
            # dependencies = []
            # ///
            import sys
            from pathlib import Path
            Path(sys.argv[1]).write_text(str(int(sys.argv[2]) ** 2))
            print("squared", sys.argv[2])
        """)
        )
        job = api.run_uv_job(str(script), script_args=["/data/result.txt", "12"], namespace=ns)
        api.wait_for_job(job.id, namespace=ns, poll_interval=0.2)
        for line in api.fetch_job_logs(job_id=job.id, namespace=ns):
            print(f"[{job.id[:8]}] {line}")
        folder = job.volumes[0].path
        out = Path(tmp) / "result.txt"
        api.download_bucket_files(f"{ns}/jobs-artifacts", files=[(f"{folder}/result.txt", str(out))])
        print("result file from the bucket:", out.read_text())


if __name__ == "__main__":
    main()
