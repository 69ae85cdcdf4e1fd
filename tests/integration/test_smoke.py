from __future__ import annotations

from helpers import wait_stage
from huggingface_hub import HfApi


def test_run_job_logs_come_back(api: HfApi, ns: str) -> None:
    job = api.run_job(image="python:3.12", command=["python", "-c", "print('hello from the job')"], namespace=ns)
    assert job.status.stage == "SCHEDULING"
    assert wait_stage(api, job.id, ns).status.stage == "COMPLETED"
    assert list(api.fetch_job_logs(job_id=job.id, namespace=ns)) == ["hello from the job"]
