"""Secrets reach the job's environment and nowhere else: not the job record, logs, run folder or URLs."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi

from hfremote import remote
from hfremote.emulator import Emulator


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def env_digests_match(expected: dict[str, str]) -> dict[str, bool]:
    """For each name, whether the job's environment holds a value with that sha256 (never the value itself)."""
    import hashlib
    import os

    return {
        name: name in os.environ and hashlib.sha256(os.environ[name].encode()).hexdigest() == want
        for name, want in expected.items()
    }


def test_secrets_reach_the_job_and_leak_nowhere(
    remote_emulator: Emulator, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    emu = remote_emulator
    mine, other = f"hfsecret_{uuid.uuid4().hex}", f"hfsecret_{uuid.uuid4().hex}"
    monkeypatch.setenv("MY_SECRET", mine)
    monkeypatch.setenv("HF_TOKEN", emu.token)  # the job gets the caller's token as a secret too
    from_env = remote(secrets=["MY_SECRET", "HF_TOKEN"], name="from-env")(env_digests_match)
    given = remote(secrets={"OTHER": other}, name="given")(env_digests_match)

    future = given.submit({"OTHER": digest(other), "MY_SECRET": digest(mine)})
    blocking = from_env({"MY_SECRET": digest(mine), "HF_TOKEN": digest(emu.token), "OTHER": digest(other)})
    assert blocking == {"MY_SECRET": True, "HF_TOKEN": True, "OTHER": False}
    assert future.result(timeout=60) == {"OTHER": True, "MY_SECRET": False}

    needles = {"MY_SECRET": mine.encode(), "OTHER": other.encode(), "token": emu.token.encode()}

    def assert_clean(what: str, data: bytes | str) -> None:
        blob = data.encode() if isinstance(data, str) else data
        leaked = [name for name, needle in needles.items() if needle in blob]
        assert not leaked, f"{', '.join(leaked)} leaked into {what}"

    # what this process printed (the blocking call streams the job's log lines to stderr)
    out, err = capfd.readouterr()
    assert_clean("the caller's stdout/stderr", out + err)

    api = HfApi(endpoint=emu.endpoint, token=emu.token)
    ns = emu.user
    jobs = emu.jobs()
    assert len(jobs) == 2
    for record in jobs:
        assert set(record["secrets"]) <= {"MY_SECRET", "HF_TOKEN", "OTHER"}
        assert_clean(f"the labels of job {record['id']}", json.dumps(record["labels"]))
        assert_clean(f"the environment of job {record['id']}", json.dumps(record["environment"]))
        raw = httpx.get(
            f"{emu.endpoint}/api/jobs/{ns}/{record['id']}", headers={"Authorization": f"Bearer {emu.token}"}
        )
        assert raw.status_code == 200
        body = raw.json()
        assert set(body["secrets"]) == set(record["secrets"])  # names only
        assert_clean(f"the API's JSON of job {record['id']}", raw.content)
        logs = "\n".join(api.fetch_job_logs(job_id=record["id"], namespace=ns))
        assert_clean(f"the logs of job {record['id']}", logs)

    # every file of the run folders: shared/{entry.py, manifest.json, function.pkl, lease}, chunks/*/*.pkl
    files = [item.path for item in api.list_bucket_tree(f"{ns}/hfremote", recursive=True) if item.type == "file"]
    names = {path.split("/", 2)[2] for path in files}
    shared = {"shared/entry.py", "shared/manifest.json", "shared/function.pkl", "shared/lease"}
    assert shared | {"chunks/0-1/inputs.pkl", "chunks/0-1/results.pkl"} <= names
    assert len([p for p in files if p.endswith("manifest.json")]) == 2
    dest = tmp_path / "bucket"
    api.download_bucket_files(f"{ns}/hfremote", [(path, dest / path) for path in files], raise_on_missing_files=True)
    for path in files:
        assert_clean(f"the bucket file {path}", (dest / path).read_bytes())

    # every request the emulator served (the paths carry no secret, e.g. as a query parameter)
    assert_clean("the request paths", "\n".join(path for _, _, path, _ in emu.requests()))
    # the local environment is left as it was
    assert os.environ["MY_SECRET"] == mine
