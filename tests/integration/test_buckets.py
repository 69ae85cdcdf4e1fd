"""Buckets through the real huggingface_hub client, plus plain HTTP reads of bucket files."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import BucketBatchError, BucketNotFoundError, HfHubHTTPError

from hfremote.emulator import Emulator


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _headers(emulator: Emulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {emulator.token}"}


def _resolve(emulator: Emulator, bucket_id: str, path: str, **headers: str) -> httpx.Response:
    url = f"{emulator.endpoint}/buckets/{bucket_id}/resolve/{path}"
    return httpx.get(url, headers={**_headers(emulator), **headers}, timeout=30)


def test_bucket_lifecycle(api: HfApi, ns: str, tmp_path: Path) -> None:
    bucket_id = f"{ns}/lifecycle"
    url = api.create_bucket(bucket_id, private=True)
    assert url.bucket_id == bucket_id
    assert api.create_bucket(bucket_id, exist_ok=True).bucket_id == bucket_id
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_bucket(bucket_id)
    assert excinfo.value.response.status_code == 409

    info = api.bucket_info(bucket_id)
    assert (info.id, info.private, info.size, info.total_files) == (bucket_id, True, 0, 0)
    api.create_bucket(f"{ns}/other")
    assert {b.id for b in api.list_buckets(namespace=ns)} == {bucket_id, f"{ns}/other"}

    local = tmp_path / "weights.bin"
    local.write_bytes(b"w" * 1000)
    api.batch_bucket_files(
        bucket_id,
        add=[
            (b"top level\n", "readme.txt"),
            (b"a-one", "data/a.txt"),
            (b"b-two!", "data/sub/b.txt"),
            (local, "models/weights.bin"),
        ],
    )
    info = api.bucket_info(bucket_id)
    assert (info.size, info.total_files) == (10 + 5 + 6 + 1000, 4)

    # As on the Hub: no `recursive` lists every file (files only); recursive=False one level, with folders.
    files = {"readme.txt", "data/a.txt", "data/sub/b.txt", "models/weights.bin"}
    assert {(item.type, item.path) for item in api.list_bucket_tree(bucket_id)} == {("file", f) for f in files}
    assert {(item.type, item.path) for item in api.list_bucket_tree(bucket_id, recursive=True)} == {
        ("file", f) for f in files
    }
    root = {(item.type, item.path) for item in api.list_bucket_tree(bucket_id, recursive=False)}
    assert root == {("file", "readme.txt"), ("directory", "data"), ("directory", "models")}
    under_data = {(item.type, item.path) for item in api.list_bucket_tree(bucket_id, prefix="data", recursive=False)}
    assert under_data == {("file", "data/a.txt"), ("directory", "data/sub")}
    under_data_all = {item.path for item in api.list_bucket_tree(bucket_id, prefix="data")}
    assert under_data_all == {"data/a.txt", "data/sub/b.txt"}
    # The prefix is plain text (`data` also finds `data_backup/...`), and a file's own path lists that file.
    api.batch_bucket_files(bucket_id, add=[(b"old", "data_backup/a.txt")])
    assert {item.path for item in api.list_bucket_tree(bucket_id, prefix="data", recursive=False)} == {
        "data/a.txt",
        "data/sub",
        "data_backup",
    }
    assert [item.path for item in api.list_bucket_tree(bucket_id, prefix="data/a.txt")] == ["data/a.txt"]
    api.batch_bucket_files(bucket_id, delete=["data_backup/a.txt"])

    infos = {f.path: f for f in api.get_bucket_paths_info(bucket_id, ["data/a.txt", "models/weights.bin", "nope"])}
    assert set(infos) == {"data/a.txt", "models/weights.bin"}
    assert infos["data/a.txt"].size == 5 and infos["models/weights.bin"].size == 1000
    assert all(len(f.xet_hash) == 64 and f.uploaded_at is not None for f in infos.values())

    out = tmp_path / "out"
    api.download_bucket_files(
        bucket_id,
        [
            ("readme.txt", out / "readme.txt"),
            ("data/sub/b.txt", out / "b.txt"),
            (infos["models/weights.bin"], out / "w"),
        ],
    )
    assert (out / "readme.txt").read_bytes() == b"top level\n"
    assert (out / "b.txt").read_bytes() == b"b-two!"
    assert (out / "w").read_bytes() == local.read_bytes()

    api.batch_bucket_files(bucket_id, delete=["data/a.txt"])
    assert list(api.get_bucket_paths_info(bucket_id, ["data/a.txt"])) == []
    assert "data/a.txt" not in {item.path for item in api.list_bucket_tree(bucket_id, recursive=True)}
    assert api.bucket_info(bucket_id).total_files == 3

    api.delete_bucket(bucket_id)
    assert {b.id for b in api.list_buckets(namespace=ns)} == {f"{ns}/other"}
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.bucket_info(bucket_id)
    assert excinfo.value.response.status_code == 404
    api.delete_bucket(bucket_id, missing_ok=True)


def test_plain_get_and_range(api: HfApi, emulator: Emulator, ns: str) -> None:
    bucket_id = f"{ns}/plain"
    api.create_bucket(bucket_id, private=True)
    data = os.urandom(200_000)
    api.batch_bucket_files(bucket_id, add=[(data, "dir/blob.bin")])

    whole = _resolve(emulator, bucket_id, "dir/blob.bin")
    assert whole.status_code == 200
    assert whole.content == data
    assert whole.headers["x-linked-size"] == str(len(data))

    part = _resolve(emulator, bucket_id, "dir/blob.bin", Range="bytes=10-19")
    assert part.status_code == 206
    assert part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"

    tail = _resolve(emulator, bucket_id, "dir/blob.bin", Range="bytes=-7")
    assert (tail.status_code, tail.content) == (206, data[-7:])

    head = httpx.head(f"{emulator.endpoint}/buckets/{bucket_id}/resolve/dir/blob.bin", headers=_headers(emulator))
    assert head.status_code == 200 and head.headers["x-xet-hash"]

    # A private bucket is not readable without a token (401, as the Hub); a missing file is a 404 with a JSON error.
    anonymous = httpx.get(f"{emulator.endpoint}/buckets/{bucket_id}/resolve/dir/blob.bin")
    assert anonymous.status_code == 401
    missing = _resolve(emulator, bucket_id, "dir/nope.bin")
    assert missing.status_code == 404 and "not found" in missing.json()["error"]


def test_compressible_file_round_trips(api: HfApi, emulator: Emulator, ns: str, tmp_path: Path) -> None:
    # Repetitive text: hf_xet stores these chunks LZ4-compressed, so the emulator's own decoder is used
    # for the plain GET, and the client's for download_bucket_files.
    line = b"the quick brown fox jumps over the lazy dog; 0123456789 ABCDEFGHIJ\n"
    data = line * (3_000_000 // len(line))
    bucket_id = f"{ns}/text"
    api.create_bucket(bucket_id)
    src = tmp_path / "big.txt"
    src.write_bytes(data)
    api.batch_bucket_files(bucket_id, add=[(src, "big.txt")])
    assert next(iter(api.get_bucket_paths_info(bucket_id, ["big.txt"]))).size == len(data)

    xorbs = list((emulator.state_dir / "xet" / "xorbs").iterdir())
    assert sum(p.stat().st_size for p in xorbs) < len(data) // 2, "expected hf_xet to compress the text"

    api.download_bucket_files(bucket_id, [("big.txt", tmp_path / "down.txt")])
    assert _sha((tmp_path / "down.txt").read_bytes()) == _sha(data)

    got = _resolve(emulator, bucket_id, "big.txt")
    assert got.status_code == 200
    assert _sha(got.content) == _sha(data)
    middle = _resolve(emulator, bucket_id, "big.txt", Range="bytes=1500000-1600099")
    assert (middle.status_code, middle.content) == (206, data[1_500_000:1_600_100])


def test_empty_file_round_trips(api: HfApi, emulator: Emulator, ns: str, tmp_path: Path) -> None:
    bucket_id = f"{ns}/empty"
    api.create_bucket(bucket_id)
    (tmp_path / "empty").write_bytes(b"")
    api.batch_bucket_files(bucket_id, add=[(tmp_path / "empty", "nothing.txt"), (b"x", "something.txt")])
    assert next(iter(api.get_bucket_paths_info(bucket_id, ["nothing.txt"]))).size == 0

    api.download_bucket_files(
        bucket_id, [("nothing.txt", tmp_path / "down-empty"), ("something.txt", tmp_path / "down-x")]
    )
    assert (tmp_path / "down-empty").read_bytes() == b""
    assert (tmp_path / "down-x").read_bytes() == b"x"

    got = _resolve(emulator, bucket_id, "nothing.txt")
    assert (got.status_code, got.content) == (200, b"")
    ranged = _resolve(emulator, bucket_id, "nothing.txt", Range="bytes=0-9")
    assert (ranged.status_code, ranged.content) == (200, b"")


WORKER_SOURCE = textwrap.dedent(
    """
    import hashlib, sys, time
    from pathlib import Path
    from huggingface_hub import HfApi

    endpoint, token, bucket_id, mine, mine_sha, theirs, theirs_sha, workdir = sys.argv[1:]
    work = Path(workdir)
    api = HfApi(endpoint=endpoint, token=token)
    api.batch_bucket_files(bucket_id, add=[(work / "upload.bin", mine)])

    def check(remote, expected, dest):
        api.download_bucket_files(bucket_id, [(remote, dest)])
        got = hashlib.sha256(dest.read_bytes()).hexdigest()
        assert got == expected, f"{remote}: sha256 {got} != {expected}"

    check(mine, mine_sha, work / "own.bin")
    deadline = time.monotonic() + 60
    while not list(api.get_bucket_paths_info(bucket_id, [theirs])):
        assert time.monotonic() < deadline, f"{theirs} never appeared"
        time.sleep(0.05)
    check(theirs, theirs_sha, work / "other.bin")
    print("ok")
    """
)


def test_two_processes_upload_and_download_at_once(api: HfApi, emulator: Emulator, ns: str, tmp_path: Path) -> None:
    bucket_id = f"{ns}/parallel"
    api.create_bucket(bucket_id)
    names, shas = ["one.bin", "two.bin"], []
    for i in range(2):
        work = tmp_path / f"worker{i}"
        (work / "hf-home").mkdir(parents=True)
        data = os.urandom(5 * 1024 * 1024)
        (work / "upload.bin").write_bytes(data)
        shas.append(_sha(data))
    env_base = {
        **os.environ,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_XET_TELEMETRY_ENABLED": "false",
    }
    env_base.pop("HF_TOKEN", None)
    env_base.pop("HF_ENDPOINT", None)
    procs = []
    for i in range(2):
        work = tmp_path / f"worker{i}"
        args = [emulator.endpoint, emulator.token, bucket_id, names[i], shas[i], names[1 - i], shas[1 - i], str(work)]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER_SOURCE, *args],
                env={**env_base, "HF_HOME": str(work / "hf-home")},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.strip() == "ok"
    sizes = {f.path: f.size for f in api.list_bucket_tree(bucket_id)}
    assert sizes == {"one.bin": 5 * 1024 * 1024, "two.bin": 5 * 1024 * 1024}


def test_users_orgs_and_public_buckets(tmp_path: Path) -> None:
    """Several users with their own tokens, an org, and the Hub's access rules for buckets."""
    with Emulator(
        tmp_path / "users",
        token="hf_alice_1",
        user="alice",
        users=(("bob", "hf_bob_2"), ("carol", "hf_carol_3")),
        orgs=("team:alice,bob",),
    ) as emu:
        alice, bob, carol = (HfApi(endpoint=emu.endpoint, token=t) for t in ("hf_alice_1", "hf_bob_2", "hf_carol_3"))
        anonymous = HfApi(endpoint=emu.endpoint, token=False)
        assert [api.whoami()["name"] for api in (alice, bob, carol)] == ["alice", "bob", "carol"]
        assert [org["name"] for org in bob.whoami()["orgs"]] == ["team"] and carol.whoami()["orgs"] == []

        alice.create_bucket("alice/public")
        alice.create_bucket("alice/secret", private=True)
        alice.batch_bucket_files("alice/public", add=[(b"hi", "a.txt")])
        alice.batch_bucket_files("alice/secret", add=[(b"psst", "s.txt")])
        # A public bucket is readable by anyone, even without a token; writing needs its namespace.
        assert anonymous.bucket_info("alice/public").id == "alice/public"
        assert [f.path for f in anonymous.list_bucket_tree("alice/public")] == ["a.txt"]
        assert [b.id for b in carol.list_buckets(namespace="alice")] == ["alice/public"]
        with pytest.raises(Exception, match="403"):  # refused at the Xet write token (hf_xet reports it)
            carol.batch_bucket_files("alice/public", add=[(b"x", "b.txt")])
        with pytest.raises(HfHubHTTPError) as forbidden:
            carol.batch_bucket_files("alice/public", delete=["a.txt"])
        assert forbidden.value.response.status_code == 403
        # A private one does not exist for others: 404 to a user, 401 to a visitor.
        with pytest.raises(BucketNotFoundError):
            carol.bucket_info("alice/secret")
        with pytest.raises(HfHubHTTPError) as unauthenticated:
            anonymous.bucket_info("alice/secret")
        assert unauthenticated.value.response.status_code == 401
        # copyFile needs the source to be readable by the caller, whatever hashes the storage knows.
        (secret,) = alice.get_bucket_paths_info("alice/secret", ["s.txt"])
        carol.create_bucket("carol/mine")
        with pytest.raises(BucketNotFoundError):
            carol.batch_bucket_files("carol/mine", copy=[("bucket", "alice/secret", secret.xet_hash, "stolen.txt")])
        with pytest.raises(BucketBatchError):  # a hash the named source does not have
            carol.batch_bucket_files("carol/mine", copy=[("bucket", "alice/public", secret.xet_hash, "x.txt")])
        # Org members act in the org: bob moves his own bucket into the team, carol cannot.
        bob.create_bucket("bob/data")
        bob.move_bucket(from_id="bob/data", to_id="team/data")
        assert alice.bucket_info("team/data").id == "team/data"
        with pytest.raises(HfHubHTTPError) as not_member:
            carol.move_bucket(from_id="carol/mine", to_id="team/mine")
        assert not_member.value.response.status_code == 403
        # Jobs: a member runs in the org, a non-member cannot list its jobs.
        job = bob.run_job(image="python:3.12", command=["python", "-c", "print(1)"], namespace="team")
        assert job.owner.name == "team" and job.owner.type == "org"
        with pytest.raises(HfHubHTTPError) as outsider:
            list(carol.list_jobs(namespace="team"))
        assert outsider.value.response.status_code == 403
