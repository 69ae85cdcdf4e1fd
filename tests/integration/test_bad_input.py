"""Bad requests get a 4xx (never a 500) with a JSON `{"error": ...}` that says what is wrong."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import BadRequestError, HfHubHTTPError

from hfremote.emulator import Emulator

IMAGE = {"dockerImage": "python:3.12"}
CMD = {**IMAGE, "command": ["python", "-c", "print(1)"]}
HASH = "0" * 64


@dataclass
class Setup:
    emulator: Emulator
    api: HfApi
    values: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """One emulator for the whole table: every case must leave it without a single job."""
    with Emulator(tmp_path_factory.mktemp("bad-input"), token="hf_test_token_bad_input") as emu:
        api = HfApi(endpoint=emu.endpoint, token=emu.token)
        ns = emu.user
        api.create_bucket(f"{ns}/b", private=True)
        api.batch_bucket_files(f"{ns}/b", add=[(b"0123456789", "f.txt")])
        sched = api.create_scheduled_job(
            image="python:3.12", command=["python", "-c", "print(1)"], schedule="@yearly", suspend=True, namespace=ns
        )
        yield Setup(emu, api, {"ns": ns, "sched": sched.id})


@dataclass
class Case:
    id: str
    method: str
    path: str
    status: int
    keyword: str
    body: Any = None  # a dict/list is sent as JSON, bytes/str as they are
    headers: dict[str, str] = field(default_factory=dict)
    auth: str | None = "good"  # "good", None (no header) or a literal bad token


def job(**spec: Any) -> dict[str, Any]:
    return {**CMD, **spec}


def scheduled(schedule: str) -> dict[str, Any]:
    return {"jobSpec": CMD, "schedule": schedule}


def add(path: str) -> bytes:
    return json.dumps({"type": "addFile", "path": path, "xetHash": HASH, "mtime": 0}).encode() + b"\n"


JOBS = "/api/jobs/{ns}"
CASES = [
    # -- job creation ------------------------------------------------------------------------------
    Case("malformed-json", "POST", JOBS, 400, "malformed", b'{"dockerImage": "python:3.12", "command": ['),
    Case("not-an-object", "POST", JOBS, 400, "object", [1, 2, 3]),
    Case("missing-command", "POST", JOBS, 400, "command", IMAGE),
    Case("empty-command", "POST", JOBS, 400, "command", {**IMAGE, "command": []}),
    Case("unknown-flavor", "POST", JOBS, 400, "cpu-basic", job(flavor="not-a-flavor")),
    Case("timeout-zero", "POST", JOBS, 400, "timeoutSeconds", job(timeoutSeconds=0)),
    Case("timeout-negative", "POST", JOBS, 400, "timeoutSeconds", job(timeoutSeconds=-5)),
    Case("timeout-string", "POST", JOBS, 400, "timeoutSeconds", job(timeoutSeconds="ten")),
    Case("attempts-zero", "POST", JOBS, 400, "attempts", job(attempts=0)),
    Case("label-key-dot", "POST", JOBS, 400, "label key", job(labels={"a.b": "x"})),
    Case("label-value-long", "POST", JOBS, 400, "100", job(labels={"k": "v" * 101})),
    Case("image-and-space", "POST", JOBS, 400, "exactly one", job(spaceId="someone/space")),
    Case("neither-image-nor-space", "POST", JOBS, 400, "exactly one", {"command": ["python"]}),
    Case(
        "mount-not-absolute",
        "POST",
        JOBS,
        400,
        "mountPath",
        job(volumes=[{"type": "bucket", "source": "emulator-user/b", "mountPath": "data"}]),
    ),
    Case(
        "mount-twice",
        "POST",
        JOBS,
        400,
        "two volumes",
        job(
            volumes=[
                {"type": "bucket", "source": "emulator-user/b", "mountPath": "/data"},
                {"type": "model", "source": "org/model", "mountPath": "/data/"},
            ]
        ),
    ),
    Case(
        "volume-type",
        "POST",
        JOBS,
        400,
        "volume type",
        job(volumes=[{"type": "disk", "source": "a/b", "mountPath": "/d"}]),
    ),
    Case("env-name-space", "POST", JOBS, 400, "environment variable", job(environment={"MY VAR": "1"})),
    Case("secret-name-space", "POST", JOBS, 400, "environment variable", job(secrets={"MY SECRET": "1"})),
    Case("expose-port", "POST", JOBS, 400, "port", job(expose={"ports": [70000]})),
    Case("oversize-body", "POST", JOBS, 413, "limit", job(environment={"BIG": "x" * (1 << 20)})),
    # -- scheduled jobs ----------------------------------------------------------------------------
    Case("cron-three-fields", "POST", "/api/scheduled-jobs/{ns}", 400, "schedule", scheduled("* * *")),
    Case("cron-unknown-preset", "POST", "/api/scheduled-jobs/{ns}", 400, "@hourly", scheduled("@fortnightly")),
    Case("cron-minute-61", "POST", "/api/scheduled-jobs/{ns}", 400, "schedule", scheduled("61 * * * *")),
    Case("cron-never-fires", "POST", "/api/scheduled-jobs/{ns}", 400, "schedule", scheduled("0 0 31 2 *")),
    Case(
        "scheduled-bad-spec",
        "POST",
        "/api/scheduled-jobs/{ns}",
        400,
        "cpu-basic",
        {
            "jobSpec": job(flavor="huge"),
            "schedule": "@daily",
        },
    ),
    Case(
        "reschedule-bad-cron",
        "POST",
        "/api/scheduled-jobs/{ns}/{sched}/schedule",
        400,
        "schedule",
        {"schedule": "every tuesday"},
    ),
    Case("reschedule-no-field", "POST", "/api/scheduled-jobs/{ns}/{sched}/schedule", 400, "schedule", {}),
    Case("unknown-scheduled", "GET", "/api/scheduled-jobs/{ns}/" + "f" * 24, 404, "not found"),
    # -- buckets -----------------------------------------------------------------------------------
    Case("batch-dotdot", "POST", "/api/buckets/{ns}/b/batch", 400, "path", add("../x")),
    Case("batch-absolute", "POST", "/api/buckets/{ns}/b/batch", 400, "path", add("/abs")),
    Case("batch-empty-segment", "POST", "/api/buckets/{ns}/b/batch", 400, "path", add("a//b")),
    Case("batch-not-json", "POST", "/api/buckets/{ns}/b/batch", 400, "batch operation", b"add this file\n"),
    Case("batch-unknown-type", "POST", "/api/buckets/{ns}/b/batch", 400, "addFile", b'{"type":"x","path":"a"}\n'),
    Case("paths-info-dotdot", "POST", "/api/buckets/{ns}/b/paths-info", 400, "path", {"paths": ["a/../f.txt"]}),
    Case("paths-info-not-list", "POST", "/api/buckets/{ns}/b/paths-info", 400, "paths", {"paths": "f.txt"}),
    Case("resolve-dotdot", "GET", "/buckets/{ns}/b/resolve/%2E%2E/b/f.txt", 400, "path"),
    Case("resolve-empty-segment", "GET", "/buckets/{ns}/b/resolve/a//f.txt", 400, "path"),
    Case("resolve-missing-file", "GET", "/buckets/{ns}/b/resolve/nope.txt", 404, "not found"),
    Case("resolve-bad-range", "GET", "/buckets/{ns}/b/resolve/f.txt", 400, "range", headers={"Range": "lines=1-2"}),
    Case(
        "resolve-range-past-end", "GET", "/buckets/{ns}/b/resolve/f.txt", 416, "outside", headers={"Range": "bytes=50-"}
    ),
    Case("resolve-empty-suffix", "GET", "/buckets/{ns}/b/resolve/f.txt", 416, "range", headers={"Range": "bytes=-0"}),
    Case("bucket-visibility", "POST", "/api/buckets/{ns}/new", 400, "visibility", {"visibility": "secret"}),
    Case("bucket-settings", "PUT", "/api/buckets/{ns}/b/settings", 400, "private", {"private": "yes"}),
    Case("unknown-bucket", "GET", "/api/buckets/{ns}/nope", 404, "not found"),
    # -- auth, routing, lookups --------------------------------------------------------------------
    Case("no-token", "GET", JOBS, 401, "credentials", auth=None),
    Case("wrong-token", "GET", JOBS, 401, "credentials", auth="hf_wrong"),
    Case("no-token-post", "POST", JOBS, 401, "credentials", CMD, auth=None),
    Case("unknown-job", "GET", "/api/jobs/{ns}/" + "0" * 24, 404, "not found"),
    Case("unknown-job-logs", "GET", "/api/jobs/{ns}/" + "0" * 24 + "/logs", 404, "not found"),
    Case("other-namespace", "GET", "/api/jobs/somebody-else", 403, "namespace"),
    Case("other-namespace-post", "POST", "/api/jobs/somebody-else", 403, "namespace", CMD),
    Case("other-namespace-bucket", "POST", "/api/buckets/somebody-else/b", 403, "namespace", {}),
    Case("unknown-route", "GET", "/api/not-a-route", 404, "no route"),
    Case("wrong-method", "PUT", JOBS, 405, "not allowed", CMD),
    Case("list-bad-cursor", "GET", JOBS + "?cursor=abc", 400, "cursor"),
    Case("list-negative-cursor", "GET", JOBS + "?cursor=-5", 400, "cursor"),
    Case("buckets-negative-cursor", "GET", "/api/buckets/{ns}?cursor=-1", 400, "cursor"),
    Case("list-bad-label-filter", "GET", JOBS + "?label=novalue", 400, "label"),
    Case("advance-backwards", "POST", "/_emulator/advance", 400, "seconds", {"seconds": -1}),
    # -- hostile requests that once broke the emulator (each is followed by a good request) ---------
    Case("advance-nan", "POST", "/_emulator/advance", 400, "seconds", b'{"seconds": NaN}'),
    Case("advance-infinity", "POST", "/_emulator/advance", 400, "seconds", b'{"seconds": Infinity}'),
    Case("advance-bool", "POST", "/_emulator/advance", 400, "seconds", {"seconds": True}),
    Case("advance-past-9999", "POST", "/_emulator/advance", 400, "seconds", {"seconds": 10**12}),
    Case("fault-path-type", "POST", "/_emulator/faults", 400, "path", {"kind": "500", "path": 5}),
    Case("fault-count-type", "POST", "/_emulator/faults", 400, "count", {"kind": "500", "count": "2"}),
    Case("fault-delay-nan", "POST", "/_emulator/faults", 400, "delay", b'{"kind": "kill", "delay": NaN}'),
    Case("list-huge-cursor", "GET", JOBS + "?cursor=" + "1" + "0" * 26, 400, "cursor"),
    Case("job-id-nul", "GET", "/api/jobs/{ns}/%00", 404, "not found"),
    Case("job-id-newline", "GET", "/api/jobs/{ns}/a%0D%0ASet-Cookie:x", 404, "not found"),
    Case("logs-negative-tail", "GET", "/api/jobs/{ns}/" + "0" * 24 + "/logs?tail=-1", 404, "not found"),
    Case("ssh", "POST", JOBS, 400, "ssh", job(ssh={"enabled": True})),
    Case(
        "content-type-newline",
        "POST",
        "/api/buckets/{ns}/b/batch",
        400,
        "contentType",
        json.dumps({"type": "addFile", "path": "x", "xetHash": HASH, "contentType": "a\r\nb: c"}).encode(),
    ),
    Case("move-model", "POST", "/api/repos/move", 400, "buckets only", {"fromRepo": "a/b", "toRepo": "a/c"}),
    Case("bucket-without-namespace", "GET", "/api/buckets/nope", 404, "nope"),
    Case("delete-bucket-without-namespace", "DELETE", "/api/buckets/nope", 404, "nope"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_request_is_a_helpful_4xx(setup: Setup, case: Case) -> None:
    emu = setup.emulator
    headers = dict(case.headers)
    if case.auth == "good":
        headers["Authorization"] = f"Bearer {emu.token}"
    elif case.auth is not None:
        headers["Authorization"] = f"Bearer {case.auth}"
    content: bytes | None
    if isinstance(case.body, (dict, list)):
        content, headers["Content-Type"] = json.dumps(case.body).encode(), "application/json"
    else:
        content = case.body.encode() if isinstance(case.body, str) else case.body
    url = emu.endpoint + case.path.format(**setup.values)
    response = httpx.request(case.method, url, content=content, headers=headers, timeout=30)

    assert response.status_code == case.status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error, str) and case.keyword.lower() in error.lower(), error
    assert emu.jobs() == [], "a rejected request created a job"
    # ... and the emulator still answers a good request correctly.
    good = httpx.get(emu.endpoint + JOBS.format(**setup.values), headers={"Authorization": f"Bearer {emu.token}"})
    assert good.status_code == 200 and good.json() == []
    assert httpx.get(emu.endpoint + "/_emulator/faults", headers={"Authorization": f"Bearer {emu.token}"}).json() == []


def test_no_job_was_created(setup: Setup) -> None:
    # Runs after the table (same module-scoped emulator): not one of the bad creations made a job.
    assert list(setup.api.list_jobs(namespace=setup.values["ns"])) == []
    assert [s.id for s in setup.api.list_scheduled_jobs(namespace=setup.values["ns"])] == [setup.values["sched"]]


def test_client_surfaces_the_flavor_list(setup: Setup) -> None:
    with pytest.raises(HfHubHTTPError) as excinfo:
        setup.api.run_job(
            image="python:3.12",
            command=["python", "-c", "print(1)"],
            flavor="not-a-flavor",
            namespace=setup.values["ns"],
        )
    assert isinstance(excinfo.value, BadRequestError)
    assert excinfo.value.response.status_code == 400
    assert "cpu-basic" in str(excinfo.value) and "not-a-flavor" in str(excinfo.value)
    assert list(setup.api.list_jobs(namespace=setup.values["ns"])) == []
