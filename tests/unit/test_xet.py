"""Pure pieces of the emulator's Xet storage: Range parsing, chunk decoding, shard parsing."""

from __future__ import annotations

import os
import struct

import lz4.frame
import pytest

from hfremote.emulator._util import HTTPError
from hfremote.emulator._xet import (
    XetStorage,
    _ungroup4,
    decode_chunk,
    hash_hex,
    parse_range,
    parse_shard,
)


# -- parse_range --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "total", "expected"),
    [
        (None, 100, (0, 99)),
        ("", 100, (0, 99)),
        ("bytes=10-19", 100, (10, 19)),
        ("bytes=0-0", 100, (0, 0)),
        ("bytes=90-", 100, (90, 99)),
        ("bytes=90-500", 100, (90, 99)),  # the end is clamped to the file
        ("bytes=-10", 100, (90, 99)),  # suffix range: the last 10 bytes
        ("bytes=-500", 100, (0, 99)),
        ("bytes=5-9,20-30", 100, (5, 9)),  # only the first range is served
        (" bytes = 1-2", 100, (1, 2)),
        ("bytes=0-10", 0, (0, -1)),  # an empty file has no bytes to range over
        (None, 0, (0, -1)),
    ],
)
def test_parse_range(header: str | None, total: int, expected: tuple[int, int]) -> None:
    assert parse_range(header, total) == expected


@pytest.mark.parametrize("header", ["bytes=a-b", "lines=1-2", "bytes", "bytes=1-2-3", "bytes=-", "bytes=--5"])
def test_parse_range_rejects_malformed_headers(header: str) -> None:
    with pytest.raises(HTTPError) as excinfo:
        parse_range(header, 100)
    assert excinfo.value.status == 400
    assert "Range" in excinfo.value.message


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=150-200", "bytes=20-10", "bytes=-0"])
def test_parse_range_unsatisfiable(header: str) -> None:
    with pytest.raises(HTTPError) as excinfo:
        parse_range(header, 100)
    assert excinfo.value.status == 416


# -- chunk decoding -----------------------------------------------------------------------------------
def _group4(data: bytes) -> bytes:
    """What xet's byte grouping does before compressing: bytes 0,4,8.. then 1,5,9.. and so on."""
    return b"".join(data[g::4] for g in range(4))


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 8, 9, 1001])
def test_ungroup4_inverts_grouping(n: int) -> None:
    data = os.urandom(n)
    assert _ungroup4(_group4(data)) == data


def test_ungroup4_known_layout() -> None:
    # 0..9 grouped: [0,4,8] [1,5,9] [2,6] [3,7]
    assert _ungroup4(bytes([0, 4, 8, 1, 5, 9, 2, 6, 3, 7])) == bytes(range(10))


def test_decode_chunk_schemes() -> None:
    data = b"float32 weights " * 500 + os.urandom(37)
    assert decode_chunk(0, data) == data
    assert decode_chunk(1, lz4.frame.compress(data)) == data
    assert decode_chunk(2, lz4.frame.compress(_group4(data))) == data
    with pytest.raises(ValueError, match="scheme 7"):
        decode_chunk(7, data)


def test_walk_reads_chunk_headers() -> None:
    raw, packed = b"abcdef", lz4.frame.compress(b"z" * 300)

    def chunk(scheme: int, payload: bytes, size: int) -> bytes:
        return bytes([0]) + len(payload).to_bytes(3, "little") + bytes([scheme]) + size.to_bytes(3, "little") + payload

    xorb = chunk(0, raw, 6) + chunk(1, packed, 300) + b"\x01footer bytes that are not chunks"
    offsets, sizes, schemes = XetStorage._walk(xorb)
    assert offsets == [0, 14, 14 + 8 + len(packed)]
    assert sizes == [6, 300]
    assert schemes == [0, 1]
    with pytest.raises(ValueError, match="past the end"):
        XetStorage._walk(chunk(0, raw, 6)[:-1])


# -- shards -------------------------------------------------------------------------------------------
def _hash(words: tuple[int, int, int, int]) -> bytes:
    return b"".join(w.to_bytes(8, "little") for w in words)


def _file_header(file_hash: bytes, flags: int, count: int) -> bytes:
    return file_hash + struct.pack("<IIQ", flags, count, 0)


def _entry(xorb: bytes, unpacked: int, start: int, end: int) -> bytes:
    return xorb + struct.pack("<IIII", 0, unpacked, start, end)


def test_hash_hex_prints_little_endian_words() -> None:
    raw = _hash((1, 0xABCDEF, 0, 0xFFFFFFFFFFFFFFFF))
    assert hash_hex(raw) == "0000000000000001" + "0000000000abcdef" + "0000000000000000" + "ffffffffffffffff"
    assert hash_hex(bytes(range(32)))[:16] == "0706050403020100"


def test_parse_shard_on_a_hand_built_shard() -> None:
    file_a, file_b = _hash((1, 2, 3, 4)), _hash((5, 6, 7, 8))
    xorb_1, xorb_2 = _hash((0x11, 0, 0, 0)), _hash((0x22, 0, 0, 0))
    header = b"HFRepoMetaData".ljust(32, b"\0") + struct.pack("<QQ", 2, 0)
    shard = (
        header
        # file A: two segments, with verification entries and a metadata extension to skip
        + _file_header(file_a, (1 << 31) | (1 << 30), 2)
        + _entry(xorb_1, 1000, 0, 3)
        + _entry(xorb_2, 24, 5, 6)
        + os.urandom(48 * 2)  # verification entries
        + os.urandom(48)  # metadata extension (sha256 etc.)
        # file B: one segment, no extras
        + _file_header(file_b, 0, 1)
        + _entry(xorb_1, 500, 3, 4)
        # bookend, then sections the parser must not read
        + b"\xff" * 32
        + bytes(16)
        + os.urandom(200)
    )
    files = parse_shard(shard)
    assert files == {
        hash_hex(file_a): [[hash_hex(xorb_1), 0, 3, 1000], [hash_hex(xorb_2), 5, 6, 24]],
        hash_hex(file_b): [[hash_hex(xorb_1), 3, 4, 500]],
    }


def test_parse_shard_of_an_empty_file_section() -> None:
    header = bytes(32) + struct.pack("<QQ", 2, 0)
    assert parse_shard(header + b"\xff" * 32 + bytes(16)) == {}
    assert parse_shard(header) == {}


def test_parse_shard_truncated_entries_raise_struct_error() -> None:
    header = bytes(32) + struct.pack("<QQ", 2, 0)
    truncated = header + _file_header(_hash((1, 1, 1, 1)), 0, 3) + _entry(_hash((2, 2, 2, 2)), 10, 0, 1)
    with pytest.raises(struct.error):
        parse_shard(truncated)
