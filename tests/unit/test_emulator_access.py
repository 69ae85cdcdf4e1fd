"""Pure pieces of the emulator's API: users and orgs, the Hub's tree listing, log tails. No HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from hfremote.emulator._api_buckets import tree_entries
from hfremote.emulator._logs import LogBook
from hfremote.emulator._users import Users, parse_org, parse_user
from hfremote.emulator._util import Clock, HTTPError
from hfremote.emulator._xet import file_hash, merkle_hash


def test_users_tokens_and_orgs() -> None:
    users = Users([("alice", "tok-a"), ("bob", "tok-b")], {"team": ["alice", "bob"], "solo": []})
    assert users.default == "alice"
    assert users.from_authorization(b"Bearer tok-b") == (True, "bob")
    assert users.from_authorization(b"Bearer nope") == (True, None)
    assert users.from_authorization(b"Basic tok-a") == (True, None)
    assert users.from_authorization(None) == (False, None)
    assert users.member("bob", "team") and users.member("alice", "solo") and not users.member("bob", "solo")
    assert users.acting_in("bob", "me") == "bob"
    with pytest.raises(HTTPError) as denied:
        users.acting_in("bob", "alice")
    assert denied.value.status == 403
    with pytest.raises(HTTPError) as anonymous:
        users.acting_in(None, "alice")
    assert anonymous.value.status == 401
    assert users.known("team") and not users.known("carol")


@pytest.mark.parametrize(
    ("users", "orgs", "problem"),
    [
        ([("a", "t"), ("b", "t")], {}, "share a token"),
        ([("a", "t")], {"a": []}, "both a user"),
        ([("a", "t")], {"o": ["zed"]}, "unknown users"),
    ],
)
def test_users_refuse_inconsistent_setups(
    users: list[tuple[str, str]], orgs: dict[str, list[str]], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        Users(users, orgs)


def test_option_parsing() -> None:
    assert parse_user("alice") == ("alice", None)
    assert parse_user("alice:hf_x") == ("alice", "hf_x")
    assert parse_org("team:alice, bob") == ("team", ("alice", "bob"))
    for bad in ("", "a b", "alice:", "../x"):
        with pytest.raises(ValueError):
            parse_user(bad)


FILES = [
    {"path": p, "xetHash": "0" * 64, "size": 1, "mtimeMs": 0, "uploadedAt": f"2026-01-0{i + 1}T00:00:00.000Z"}
    for i, p in enumerate(["a.txt", "logs.json", "logs/1.txt", "logs/deep/2.txt", "logs_backup/3.txt"])
]


def listing(prefix: str, recursive: bool) -> set[tuple[str, str]]:
    files = [f for f in FILES if f["path"].startswith(prefix)]
    return {(e["type"], e["path"]) for e in tree_entries(files, prefix, recursive)}


def test_tree_listing_as_the_hub() -> None:
    assert listing("", True) == {("file", f["path"]) for f in FILES}  # files only
    assert listing("", False) == {
        ("file", "a.txt"),
        ("file", "logs.json"),
        ("directory", "logs"),
        ("directory", "logs_backup"),
    }
    # The prefix is plain text; what is inside the folder of that name is listed one level deep.
    assert listing("logs", False) == {
        ("file", "logs.json"),
        ("file", "logs/1.txt"),
        ("directory", "logs/deep"),
        ("directory", "logs_backup"),
    }
    assert listing("logs/", False) == {("file", "logs/1.txt"), ("directory", "logs/deep")}
    assert listing("logs/1.txt", False) == {("file", "logs/1.txt")}  # a file's own path
    folders = {e["path"]: e["uploadedAt"] for e in tree_entries(FILES, "", False) if e["type"] == "directory"}
    assert folders["logs"] == "2026-01-04T00:00:00.000Z"  # the latest upload below it


def test_log_tail_matches_a_full_read(tmp_path: Path) -> None:
    book = LogBook(tmp_path, Clock())
    for i in range(500):
        book.append("job", f"line {i} " + "x" * (i % 97))
    full, end = book.read("job")
    for lines in (0, 1, 7, 499, 500, 900):
        tail, offset = book.read_tail("job", lines, block=64)  # small blocks: many partial first lines
        assert tail == (full[-lines:] if lines else []) and offset == end
    with (tmp_path / "job.jsonl").open("a") as f:
        f.write('{"data": "half a li')  # a line being written is left for the next read
    assert book.read_tail("job", 3, block=50) == (full[-3:], end)
    part, _ = book.read("job", 0, limit=100)  # a bounded read: a few whole lines, never a part of one
    assert 1 <= len(part) <= 4 and part == full[: len(part)]
    assert book.events("job") == full


def _raw(hex_hash: str) -> bytes:
    return b"".join(int(hex_hash[i * 16 : (i + 1) * 16], 16).to_bytes(8, "little") for i in range(4))


A = "cfc5d07f6f03c29bbf424132963fe08d19a37d5757aaf520bf08119f05cd56d6"
B = "c3e67584b5c4fc2a89837ec39e40f2c8a6bb0b2987ac94cd4b31e5fbdd210a72"
C = "0d2beb91b9196929a5ddec9f6e306924ddf4a24268e3e59fd8464738d525af37"
D = "adf8773496a9b7319b2e50dc98093f344053b17d8ad37100b9c07d9805988784"


@pytest.mark.parametrize(
    ("leaves", "expected"),
    [  # reference vectors of xet-core (merklehash/src/aggregated_hashes.rs, test_correctness)
        ([(A, 100)], A),
        ([(A, 100), (B, 200), (C, 300)], "71ec1275fca074724e2dd666921b3277c7cee603e4d025bcab2d4050015be2bc"),
        ([(A, 100)] * 4, "89f2ada89ff8c96763c6b25010e6dd76a4c05b1466207633ea559acf2093211b"),
        ([(A, 100), (B, 200)] * 2, "90f8313ef12df385d237a067aded02562c35ded12116e32eba401dbc86c38031"),
        (
            [(A, 100), (B, 200), (A, 100), (B, 200), (C, 300), (D, 400)],
            "52c826f99507aa05d0b45e9837fa1709e0485425cfbcb1e80db3905cf98b3ee9",
        ),
    ],
)
def test_xorb_merkle_hash_matches_xet_core(leaves: list[tuple[str, int]], expected: str) -> None:
    assert merkle_hash([(_raw(h), size) for h, size in leaves]) == expected


def test_file_hash_matches_xet_core() -> None:
    assert file_hash([(_raw(A), 100)]) == "8e16257caa3fe079d484d872a8975264b2ff683b0d6db9028cc7c0f968a45661"
    three = [(_raw(A), 100), (_raw(B), 200), (_raw(C), 300)]
    assert file_hash(three) == "54e55dccc6653c612bdb5576c5d3cb34bb31bc4e100248abccf4c908b3ef7715"
