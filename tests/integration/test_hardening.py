"""Nothing breaks the emulator: each hostile request of the attack is answered with a 4xx, memory stays
bounded, and a good request is answered correctly afterwards. (The plain 4xx cases are in the table of
test_bad_input.py; here are those that need a file, a big body, a held lock or a failed start.)
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from helpers import wait_stage
from huggingface_hub import HfApi

from hfremote.emulator import Emulator
from hfremote.emulator._xet import hash_hex, xorb_hash

MB = 1 << 20


def auth(emulator: Emulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {emulator.token}"}


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


def zeros(total: int, block: int = MB) -> Iterator[bytes]:
    """A body the client streams without holding it."""
    chunk = b"\0" * block
    for _ in range(total // block):
        yield chunk


def good_request_answered(emulator: Emulator) -> None:
    response = httpx.get(f"{emulator.endpoint}/api/jobs/{emulator.user}", headers=auth(emulator), timeout=30)
    assert response.status_code == 200 and isinstance(response.json(), list)


@pytest.mark.parametrize(
    ("path", "status", "with_token"),
    [("/v1/telemetry", 200, False), ("/api/jobs/{user}", 413, True), ("/api/buckets/{user}/b/batch", 413, True)],
)
def test_big_bodies_do_not_grow_server_memory(emulator: Emulator, path: str, status: int, with_token: bool) -> None:
    HfApi(endpoint=emulator.endpoint, token=emulator.token).create_bucket(f"{emulator.user}/b")
    size = 200 * MB
    url = emulator.endpoint + path.format(user=emulator.user)
    headers = {**(auth(emulator) if with_token else {}), "Content-Length": str(size)}
    before = rss()  # the emulator serves from this process
    response = httpx.post(url, content=zeros(size), headers=headers, timeout=120)
    assert response.status_code == status, response.text
    assert rss() - before < 64 * MB, "the server buffered the body"
    good_request_answered(emulator)


def test_chunked_body_over_the_limit_is_refused_without_buffering(emulator: Emulator) -> None:
    before = rss()
    url = f"{emulator.endpoint}/api/jobs/{emulator.user}"
    response = httpx.post(url, content=zeros(150 * MB), headers=auth(emulator), timeout=120)  # no Content-Length
    assert response.status_code == 413
    assert rss() - before < 64 * MB
    good_request_answered(emulator)


def xorb_fetch_url(emulator: Emulator, api: HfApi) -> str:
    """A presigned xorb URL, as a Xet download gets it from a reconstruction plan."""
    bucket = f"{emulator.user}/ranges"
    api.create_bucket(bucket)
    api.batch_bucket_files(bucket, add=[(os.urandom(100_000), "blob.bin")])
    (info,) = api.get_bucket_paths_info(bucket, ["blob.bin"])
    grant = httpx.get(f"{emulator.endpoint}/api/buckets/{bucket}/xet-read-token", headers=auth(emulator)).json()
    plan = httpx.get(
        f"{grant['casUrl']}/v1/reconstructions/{info.xet_hash}",
        headers={"Authorization": f"Bearer {grant['accessToken']}", "Range": "bytes=0-99999"},
    ).json()
    (fetch,) = next(iter(plan["fetch_info"].values()))
    return str(fetch["url"])


def test_xorb_ranges_are_checked(emulator: Emulator, api: HfApi) -> None:
    url = xorb_fetch_url(emulator, api)
    assert httpx.get(url, headers={"Range": "bytes=0-9"}).status_code == 206
    assert httpx.get(url, headers={"Range": "bytes=1e20-"}).status_code == 400
    assert httpx.get(url, headers={"Range": f"bytes={10**20}-"}).status_code == 416
    assert httpx.get(url, headers={"Range": "bytes=10-5"}).status_code == 416  # reversed: not a 206
    ok = httpx.get(url, headers={"Range": "bytes=3-6"})
    assert ok.status_code == 206 and len(ok.content) == 4 and ok.headers["content-range"].startswith("bytes 3-6/")


def test_a_read_token_cannot_upload(emulator: Emulator, api: HfApi) -> None:
    bucket = f"{emulator.user}/tokens"
    api.create_bucket(bucket)
    read = httpx.get(f"{emulator.endpoint}/api/buckets/{bucket}/xet-read-token", headers=auth(emulator)).json()
    write = httpx.get(f"{emulator.endpoint}/api/buckets/{bucket}/xet-write-token", headers=auth(emulator)).json()
    assert read["accessToken"] != write["accessToken"]
    chunk = bytes([0]) + (4).to_bytes(3, "little") + bytes([0]) + (4).to_bytes(3, "little") + b"data"
    xorb = xorb_hash(chunk)
    refused = httpx.post(
        f"{read['casUrl']}/v1/xorbs/default/{xorb}",
        content=chunk,
        headers={"Authorization": f"Bearer {read['accessToken']}"},
    )
    assert refused.status_code == 401
    # A xorb is stored only under the hash of its content.
    misnamed = httpx.post(
        f"{write['casUrl']}/v1/xorbs/default/{'a' * 64}",
        content=chunk,
        headers={"Authorization": f"Bearer {write['accessToken']}"},
    )
    assert misnamed.status_code == 400 and "hashes to" in misnamed.json()["error"]
    accepted = httpx.post(
        f"{write['casUrl']}/v1/xorbs/default/{xorb}",
        content=chunk,
        headers={"Authorization": f"Bearer {write['accessToken']}"},
    )
    assert accepted.status_code == 200


def _raw(hex_hash: str) -> bytes:
    """The inverse of hash_hex: four little-endian u64 words."""
    return b"".join(int(hex_hash[i * 16 : (i + 1) * 16], 16).to_bytes(8, "little") for i in range(4))


def _shard(file_hash: str, segments: list[list[object]]) -> bytes:
    """A v1 shard's file section naming `file_hash` as made of `segments` (see _xet.parse_shard)."""
    out = b"\0" * 48
    out += _raw(file_hash) + (0).to_bytes(4, "little") + len(segments).to_bytes(4, "little") + b"\0" * 8
    for xorb, start, end, unpacked in segments:
        out += _raw(str(xorb)) + b"\0" * 4
        out += int(unpacked).to_bytes(4, "little") + int(start).to_bytes(4, "little") + int(end).to_bytes(4, "little")  # type: ignore[call-overload]
        out += b"\0" * 4
    return out + b"\xff" * 32 + b"\0" * 16


def test_a_shard_cannot_point_a_file_at_other_bytes(emulator: Emulator, api: HfApi, tmp_path: Path) -> None:
    bucket = f"{emulator.user}/integrity"
    api.create_bucket(bucket)
    api.batch_bucket_files(bucket, add=[(b"hello world\n", "hello.txt"), (b"other bytes!\n", "other.txt")])
    infos = {f.path: f.xet_hash for f in api.get_bucket_paths_info(bucket, ["hello.txt", "other.txt"])}
    for name in infos:  # make sure both are chunked into xorbs (a first Xet read does it)
        api.download_bucket_files(bucket, [(name, str(tmp_path / name))])
    store = emulator.ctx.store
    other_segments = store.xet_file(infos["other.txt"])
    assert other_segments is not None and store.xet_file(infos["hello.txt"]) is not None
    write = httpx.get(f"{emulator.endpoint}/api/buckets/{bucket}/xet-write-token", headers=auth(emulator)).json()
    cas = {"Authorization": f"Bearer {write['accessToken']}"}

    # Remapping the known hash of hello.txt onto other.txt's chunks changes nothing.
    httpx.post(f"{write['casUrl']}/v1/shards", content=_shard(infos["hello.txt"], other_segments), headers=cas)
    # A new hash whose chunks do not hash to it is refused.
    fake = hash_hex(os.urandom(32))
    refused = httpx.post(f"{write['casUrl']}/v1/shards", content=_shard(fake, other_segments), headers=cas)
    assert refused.status_code == 400 and "hash" in refused.json()["error"]

    served = httpx.get(f"{emulator.endpoint}/buckets/{bucket}/resolve/hello.txt", headers=auth(emulator))
    assert served.content == b"hello world\n"
    api.download_bucket_files(bucket, [("hello.txt", str(tmp_path / "again.txt"))])  # through Xet
    assert (tmp_path / "again.txt").read_bytes() == b"hello world\n"


def test_log_tail_reads_only_the_tail(emulator: Emulator, api: HfApi) -> None:
    job = api.run_job(image="python:3.12", command=["python", "-c", "print('done')"])
    wait_stage(api, job.id, emulator.user, stages=("COMPLETED",), timeout=60)
    # A 50 MB log (written directly: a job printing it would take a while).
    line = json.dumps({"data": "x" * 1000, "timestamp": "2026-01-01T00:00:00.000Z"}) + "\n"
    log = emulator.state_dir / "logs" / f"{job.id}.jsonl"
    with log.open("a") as f:
        for _ in range(50 * MB // len(line)):
            f.write(line)
        f.write(json.dumps({"data": "the last line", "timestamp": "2026-01-01T00:00:00.000Z"}) + "\n")
    tracemalloc.start()  # the peak of Python allocations (the server's included: it runs in this process)
    try:
        for _ in range(3):
            assert list(api.fetch_job_logs(job_id=job.id, tail=1)) == ["the last line"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MB, f"a tail of one line allocated {peak // MB} MB: it read the whole log"
    # The whole log still streams (a block at a time), every line of it.
    assert sum(1 for _ in api.fetch_job_logs(job_id=job.id)) == 50 * MB // len(line) + 2  # + "done", the last
    good_request_answered(emulator)


def test_blocking_work_does_not_stall_other_requests(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request stuck in the database (a slow disk, simulated) waits in a thread: the event loop serves others."""
    entered, release = threading.Event(), threading.Event()
    original = emulator.ctx.store.jobs

    def slow_jobs(*args: object, **kwargs: object) -> object:
        if args and args[0] == emulator.user:  # the listing below, not the dispatcher's queries
            entered.set()
            release.wait(30)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(emulator.ctx.store, "jobs", slow_jobs)
    answers: list[int] = []
    url = f"{emulator.endpoint}/api/jobs/{emulator.user}"
    waiting = threading.Thread(
        target=lambda: answers.append(httpx.get(url, headers=auth(emulator), timeout=60).status_code), daemon=True
    )
    waiting.start()
    try:
        assert entered.wait(30), "the listing never reached the database"
        free = httpx.get(f"{emulator.endpoint}/api/jobs/hardware", headers=auth(emulator), timeout=10)
        assert free.status_code == 200 and answers == []
    finally:
        release.set()
    waiting.join(30)
    assert answers == [200]


def open_fds() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/fd"))


def test_a_failed_start_leaks_nothing() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        fds = open_fds()
        emu = Emulator(port=port)
        with pytest.raises(OSError):
            emu.start()
        assert not emu.state_dir.exists(), "the temporary state directory was left behind"
        assert open_fds() <= fds, "a socket or the database was left open"


def test_a_bad_schedule_is_logged_and_the_others_still_fire(
    emulator: Emulator, api: HfApi, caplog: pytest.LogCaptureFixture
) -> None:
    good = api.create_scheduled_job(image="python:3.12", command=["python", "-c", "print(1)"], schedule="@hourly")
    bad = api.create_scheduled_job(image="python:3.12", command=["python", "-c", "print(2)"], schedule="@hourly")
    record = emulator.ctx.store.scheduled(bad.id)
    assert record is not None
    record["status"]["nextJobRunAt"] = "not a time"  # a record damaged at rest
    emulator.ctx.store.put_scheduled(record)
    with caplog.at_level(logging.ERROR, logger="hfremote.emulator"):
        fired = emulator.advance(3600 * 2)
    assert [emulator.ctx.store.job(j)["initiator"]["id"] for j in fired] == [good.id]  # type: ignore[index]
    assert any(bad.id in r.getMessage() for r in caplog.records), "the failing schedule was not logged"
    good_request_answered(emulator)


def test_xorb_layout_cache_is_bounded(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from hfremote.emulator import _xet

    monkeypatch.setattr(_xet, "_MAX_LAYOUTS", 8)
    storage = emulator.ctx.storage
    for i in range(50):
        chunk = (
            bytes([0]) + (4).to_bytes(3, "little") + bytes([0]) + (4).to_bytes(3, "little") + i.to_bytes(4, "little")
        )
        xorb = xorb_hash(chunk)
        storage.put_xorb(xorb, chunk)
        storage._chunks(xorb)
    assert len(storage._offsets) <= 8


def test_durations_and_metrics_as_the_hub_sends_them(tmp_path: Path) -> None:
    with Emulator(tmp_path / "one-slot", token="hf_durations_token", max_running=1) as emu:
        api = HfApi(endpoint=emu.endpoint, token=emu.token)
        running = api.run_job(
            image="python:3.12", command=["python", "-c", "import time; time.sleep(60)"], flavor="cpu-upgrade"
        )
        waiting = api.run_job(image="python:3.12", command=["python", "-c", "print(1)"])
        wait_stage(api, running.id, emu.user, stages=("RUNNING",), timeout=30)

        def wire(job_id: str) -> dict[str, object]:
            response = httpx.get(f"{emu.endpoint}/api/jobs/{emu.user}/{job_id}", headers=auth(emu))
            return response.json()  # type: ignore[no-any-return]

        assert set(wire(waiting.id)["durations"]) == {"totalSecs"}  # type: ignore[arg-type]
        assert set(wire(running.id)["durations"]) == {"totalSecs", "schedulingSecs", "runningSecs"}  # type: ignore[arg-type]
        api.cancel_job(job_id=waiting.id)  # ended before it ran: still only the total
        assert set(wire(waiting.id)["durations"]) == {"totalSecs"}  # type: ignore[arg-type]

        sample = next(iter(api.fetch_job_metrics(job_id=running.id)))
        assert sample["memory_total_bytes"] == 32 * 10**9  # cpu-upgrade's 32 GB, not the host's memory
        api.cancel_job(job_id=running.id)
