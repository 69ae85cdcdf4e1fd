"""Xet content-addressed storage: the subset of the CAS protocol that hf_xet 1.8 needs.

Uploads arrive as xorbs (chunks of file bytes, raw or LZ4) and shards (which files are made of which
chunk ranges). Downloads are answered with reconstruction plans pointing back at ranged xorb reads.
The emulator also rebuilds whole files itself, to serve plain `GET .../resolve/...` and to
materialise bucket volumes for jobs. Formats: ../../../shared/docs/xet-emulation.md.
"""

from __future__ import annotations

import collections
import hashlib
import os
import shutil
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import lz4.frame

from ._store import Store
from ._util import HTTPError

_BOOKEND = b"\xff" * 32
_MAX_LAYOUTS = 4096  # xorb chunk layouts kept in memory (a few KB each)
_VERIFICATION_FLAG = 1 << 31
_METADATA_FLAG = 1 << 30


def hash_hex(raw: bytes) -> str:
    """Xet prints a 32-byte hash as four little-endian u64 words, each as 16 hex digits."""
    return "".join(f"{int.from_bytes(raw[i * 8 : (i + 1) * 8], 'little'):016x}" for i in range(4))


def parse_shard(data: bytes) -> dict[str, list[list[Any]]]:
    """File hash -> [[xorb hash, chunk start, chunk end (exclusive), unpacked bytes], ...]."""
    files: dict[str, list[list[Any]]] = {}
    off = 48  # header: 32-byte tag, u64 version, u64 footer size
    while off + 48 <= len(data):
        file_hash = data[off : off + 32]
        if file_hash == _BOOKEND:
            break
        flags, count = struct.unpack_from("<II", data, off + 32)
        off += 48
        segments = []
        for i in range(count):
            entry = off + i * 48
            _, unpacked, start, end = struct.unpack_from("<IIII", data, entry + 32)
            segments.append([hash_hex(data[entry : entry + 32]), start, end, unpacked])
        off += 48 * (count + (count if flags & _VERIFICATION_FLAG else 0) + (1 if flags & _METADATA_FLAG else 0))
        files[hash_hex(file_hash)] = segments
    return files


# Keys of Xet's keyed blake3 hashes (xet-core merklehash/src/data_hash.rs; spec/hashing.md).
_DATA_KEY = bytes.fromhex("6697f5775b9550de3135cbaca597181c9de421109beb2b58b4d0b04b93adf229")
_INTERNAL_NODE_KEY = bytes.fromhex("017ec5c7a5472996fd946666b48a02e65ddd536f37c76dd2f86352e64a53713f")


def _next_cut(nodes: list[tuple[bytes, int]]) -> int:
    """How many nodes the next parent takes: a node whose last u64 word is 0 mod 4 ends it (2 to 9)."""
    if len(nodes) <= 2:
        return len(nodes)
    end = min(9, len(nodes))
    for i in range(2, end):
        if int.from_bytes(nodes[i][0][24:32], "little") % 4 == 0:
            return i + 1
    return end


def _merkle_root(chunks: list[tuple[bytes, int]]) -> bytes:
    """xet-core's aggregated node hash of (chunk hash, chunk size) leaves."""
    from blake3 import blake3

    nodes = list(chunks)
    if not nodes:
        return bytes(32)
    while len(nodes) > 1:
        parents, i = [], 0
        while i < len(nodes):
            group = nodes[i : i + _next_cut(nodes[i:])]
            text = "".join(f"{hash_hex(h)} : {size}\n" for h, size in group)
            parents.append((blake3(text.encode(), key=_INTERNAL_NODE_KEY).digest(), sum(size for _, size in group)))
            i += len(group)
        nodes = parents
    return nodes[0][0]


def merkle_hash(chunks: list[tuple[bytes, int]]) -> str:
    """A xorb's hash from its leaves."""
    return hash_hex(_merkle_root(chunks))


def file_hash(chunks: list[tuple[bytes, int]]) -> str:
    """A file's hash from its leaves: the merkle root, keyed-hashed once more with a zero key."""
    from blake3 import blake3

    if not chunks:
        return "0" * 64
    return hash_hex(blake3(_merkle_root(chunks), key=bytes(32)).digest())


def xorb_hash(data: bytes) -> str:
    """The hash a xorb's bytes must be stored under: the merkle hash of its decoded chunks."""
    from blake3 import blake3

    offsets, _, schemes = XetStorage._walk(data)
    leaves = []
    for i, scheme in enumerate(schemes):
        chunk = decode_chunk(scheme, data[offsets[i] + 8 : offsets[i + 1]])
        leaves.append((blake3(chunk, key=_DATA_KEY).digest(), len(chunk)))
    return merkle_hash(leaves)


def _is_hex_hash(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _ungroup4(data: bytes) -> bytes:
    """Undo xet's byte grouping: the payload is bytes 0,4,8.. then 1,5,9.. then 2,6,.. then 3,7,.."""
    n = len(data)
    out = bytearray(n)
    pos = 0
    for g in range(4):
        size = n // 4 + (1 if g < n % 4 else 0)
        out[g::4] = data[pos : pos + size]
        pos += size
    return bytes(out)


def decode_chunk(scheme: int, payload: bytes) -> bytes:
    if scheme == 0:
        return payload
    if scheme == 1:
        return bytes(lz4.frame.decompress(payload))
    if scheme == 2:
        return _ungroup4(bytes(lz4.frame.decompress(payload)))
    raise ValueError(f"unknown xet chunk compression scheme {scheme}")


class XetStorage:
    def __init__(self, root: Path, store: Store) -> None:
        self.root = root
        for sub in ("xorbs", "shards", "whole"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self._store = store
        # Chunk layouts of recently read xorbs, least recently used first: bounded in a long-lived emulator.
        self._offsets: collections.OrderedDict[str, tuple[list[int], list[int], list[int]]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._ingesting = threading.Lock()
        # Uploads whole files through our own CAS routes (set by the emulator once it has an address).
        self.ingest: Callable[[list[Path]], list[tuple[str, int]]] | None = None

    def _xorb_path(self, xorb: str) -> Path:
        if not _is_hex_hash(xorb):
            raise HTTPError(400, f"not a xet hash: {xorb!r}")
        return self.root / "xorbs" / xorb

    # -- upload ----------------------------------------------------------------------------------
    def put_xorb(self, xorb: str, data: bytes) -> bool:
        path = self._xorb_path(xorb)
        if path.exists():
            return False
        try:
            actual = xorb_hash(data)
        except (ValueError, IndexError, struct.error, RuntimeError) as e:  # lz4 raises RuntimeError
            raise HTTPError(400, f"malformed xorb {xorb}: {e}") from None
        if actual != xorb:  # content addressing: a xorb is stored only under the hash of its content
            raise HTTPError(400, f"xorb uploaded as {xorb} hashes to {actual}")
        tmp = path.with_name(f"{xorb}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: a concurrent reader sees nothing or the whole xorb
        return True

    def put_shard(self, data: bytes) -> int:
        try:
            files = parse_shard(data)
        except struct.error as e:
            raise HTTPError(400, f"malformed shard: {e}") from None
        for segments in files.values():
            for xorb, start, end, _ in segments:
                if not self._xorb_path(xorb).exists():
                    raise HTTPError(400, f"shard refers to unknown xorb {xorb}: upload the xorb first")
                if not 0 <= start < end <= len(self._chunks(xorb)[1]):
                    raise HTTPError(400, f"shard refers to chunks {start}-{end} that xorb {xorb} does not have")
        # A content address is kept once known: a later shard cannot point a hash at other bytes. A new
        # one is checked by hashing the bytes its segments decode to, so what is served is what was named.
        new = {h: segs for h, segs in files.items() if self._store.xet_file(h) is None}
        for file_hash, segments in new.items():
            if (actual := self._hash_segments(segments)) != file_hash:
                raise HTTPError(400, f"shard names file {file_hash}, but its chunks hash to {actual}")
        (self.root / "shards" / f"{hashlib.sha256(data).hexdigest()}.mdb").write_bytes(data)
        self._store.put_xet_files(new)
        return len(files)

    def _hash_segments(self, segments: list[list[Any]]) -> str:
        """The Xet hash of the file these xorb segments make up (from the chunks as uploaded)."""
        from blake3 import blake3

        leaves = []
        try:
            for xorb, start, end, _ in segments:
                offsets, _, schemes = self._chunks(xorb)
                with self._xorb_path(xorb).open("rb") as f:
                    for i in range(start, end):
                        f.seek(offsets[i] + 8)
                        chunk = decode_chunk(schemes[i], f.read(offsets[i + 1] - offsets[i] - 8))
                        leaves.append((blake3(chunk, key=_DATA_KEY).digest(), len(chunk)))
        except (ValueError, IndexError, RuntimeError) as e:  # undecodable chunks
            raise HTTPError(400, f"shard's chunks cannot be decoded: {e}") from None
        return file_hash(leaves)

    # -- files the emulator stores itself ---------------------------------------------------------
    def put_whole(self, path: Path) -> tuple[str, int]:
        """Store a file a job wrote: its Xet hash and size, the bytes kept whole.

        Chunking it into xorbs through hf_xet costs ~10 ms even for a small result file, and would
        delay the job's end; plain GETs and volume copies read whole files anyway. So the file becomes
        xorbs and a shard only when a Xet reader first asks for its reconstruction (`_ingest`).
        """
        from hf_xet import hash_files

        tmp = self.root / "whole" / f".{os.getpid()}.{threading.get_ident()}.tmp"
        shutil.copyfile(path, tmp)  # hash the copy: what is stored is exactly what was hashed
        info = hash_files([str(tmp)])[0]
        os.replace(tmp, self.root / "whole" / info.hash)
        return info.hash, info.file_size

    def _whole(self, file_hash: str) -> Path | None:
        path = self.root / "whole" / file_hash
        return path if _is_hex_hash(file_hash) and path.exists() else None

    def local_file(self, file_hash: str) -> Path:
        """A file on disk holding the stored file's bytes, decoded once and kept whole.

        Job volumes link or copy it instead of decoding xorbs for every job. Never write to it.
        """
        if (whole := self._whole(file_hash)) is not None:
            return whole
        if not _is_hex_hash(file_hash):
            raise HTTPError(400, f"not a xet hash: {file_hash!r}")
        tmp = self.root / "whole" / f".{os.getpid()}.{threading.get_ident()}.tmp"
        with tmp.open("wb") as out:
            self.write_file(file_hash, out)
        os.replace(tmp, self.root / "whole" / file_hash)  # readers see nothing or the whole file
        return self.root / "whole" / file_hash

    def _segments(self, file_hash: str) -> list[list[Any]]:
        """A file's xorb segments, ingesting a whole file first if that is all there is."""
        segments = self._store.xet_file(file_hash)
        if segments is None and (whole := self._whole(file_hash)) is not None and self.ingest is not None:
            with self._ingesting:
                segments = self._store.xet_file(file_hash)
                if segments is None:
                    (uploaded, _), *_ = self.ingest([whole])
                    if uploaded != file_hash:
                        raise HTTPError(500, f"stored {file_hash} but hf_xet hashed its bytes as {uploaded}")
                    segments = self._store.xet_file(file_hash)
        if segments is None:
            raise HTTPError(404, f"unknown file {file_hash}")
        return segments

    # -- download --------------------------------------------------------------------------------
    @staticmethod
    def _walk(data: bytes) -> tuple[list[int], list[int], list[int]]:
        """Byte offset of each chunk header (plus the end), each chunk's unpacked size and scheme."""
        offsets, sizes, schemes, off = [0], [], [], 0
        while off + 8 <= len(data):
            version = data[off]
            if version != 0:
                break  # anything after the chunks (a footer) is not ours to read
            clen = int.from_bytes(data[off + 1 : off + 4], "little")
            schemes.append(data[off + 4])
            sizes.append(int.from_bytes(data[off + 5 : off + 8], "little"))
            off += 8 + clen
            if off > len(data):
                raise ValueError("chunk runs past the end of the xorb")
            offsets.append(off)
        return offsets, sizes, schemes

    def _chunks(self, xorb: str) -> tuple[list[int], list[int], list[int]]:
        with self._lock:
            info = self._offsets.get(xorb)
            if info is not None:
                self._offsets.move_to_end(xorb)
        if info is None:
            info = self._walk(self._xorb_path(xorb).read_bytes())
            with self._lock:
                self._offsets[xorb] = info
                while len(self._offsets) > _MAX_LAYOUTS:
                    self._offsets.popitem(last=False)
        return info

    def file_size(self, file_hash: str) -> int | None:
        size = self._store.xet_size(file_hash)
        if size is None and (whole := self._whole(file_hash)) is not None:
            size = whole.stat().st_size
        return size

    def reconstruction(
        self, file_hash: str, range_header: str | None, fetch_url: str, sign: Callable[[str], str]
    ) -> dict[str, Any]:
        """The v1 reconstruction answer for the requested byte range (hf_xet always sends one)."""
        segments = self._segments(file_hash)
        total = sum(seg[3] for seg in segments)
        first, last = parse_range(range_header, total)
        terms: list[dict[str, Any]] = []
        fetch: dict[str, list[dict[str, Any]]] = {}
        pos, offset_into_first = 0, 0
        for xorb, start, end, unpacked in segments:
            seg_start, pos = pos, pos + unpacked
            if pos <= first or seg_start > last:
                continue
            offsets, sizes, _ = self._chunks(xorb)
            cursor, length = seg_start, unpacked
            # Drop whole chunks outside [first, last]; the client trims inside the first chunk.
            while start < end and cursor + sizes[start] <= first:
                cursor += sizes[start]
                length -= sizes[start]
                start += 1
            while end > start and cursor + length - sizes[end - 1] > last:
                length -= sizes[end - 1]
                end -= 1
            if not terms:
                offset_into_first = first - cursor
            terms.append({"hash": xorb, "unpacked_length": length, "range": {"start": start, "end": end}})
            fetch.setdefault(xorb, []).append(
                {
                    "range": {"start": start, "end": end},
                    "url": f"{fetch_url}/{xorb}?sig={sign(xorb)}",
                    "url_range": {"start": offsets[start], "end": offsets[end] - 1},
                }
            )
        return {"offset_into_first_range": offset_into_first, "terms": terms, "fetch_info": fetch}

    def xorb_range(self, xorb: str, range_header: str) -> tuple[bytes, int, int]:
        """The bytes of a `Range` of a stored xorb, where they start, and the xorb's size."""
        path = self._xorb_path(xorb)
        try:
            f = path.open("rb")
        except FileNotFoundError:
            raise HTTPError(404, f"unknown xorb {xorb}") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            first, last = parse_range(range_header, size)
            f.seek(first)
            return f.read(last - first + 1), first, size

    def write_file(self, file_hash: str, out: BinaryIO, first: int = 0, last: int | None = None) -> int:
        """Decode a stored file's bytes [first, last] into `out`; returns the number of bytes written."""
        if (whole := self._whole(file_hash)) is not None:
            with whole.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                last = size - 1 if last is None else min(last, size - 1)
                f.seek(first)
                return out.write(f.read(max(0, last - first + 1)))
        return self._decode(self._segments(file_hash), out, first, last)

    def _decode(self, segments: list[list[Any]], out: BinaryIO, first: int = 0, last: int | None = None) -> int:
        last = sum(seg[3] for seg in segments) - 1 if last is None else last
        pos = written = 0
        for xorb, start, end, unpacked in segments:
            if pos + unpacked <= first or pos > last:
                pos += unpacked
                continue
            offsets, _, schemes = self._chunks(xorb)
            with self._xorb_path(xorb).open("rb") as f:
                for i in range(start, end):
                    f.seek(offsets[i] + 8)
                    chunk = decode_chunk(schemes[i], f.read(offsets[i + 1] - offsets[i] - 8))
                    lo, hi = max(first - pos, 0), min(last - pos + 1, len(chunk))
                    if lo < hi:
                        out.write(chunk[lo:hi])
                        written += hi - lo
                    pos += len(chunk)
                    if pos > last:
                        return written
        return written


_SESSION: list[Any] = []
_SESSION_LOCK = threading.Lock()


INTERNAL_HEADER = "x-hfremote-emulator-internal"


def upload(cas_url: str, token: str, paths: list[Path]) -> list[tuple[str, int]]:
    """Upload local files to a CAS with the real hf_xet client; returns (xet hash, size) per file.

    The emulator turns the files that jobs write into xorbs this way, so they are chunked, hashed and
    laid out exactly as a user's upload would be. Its requests carry INTERNAL_HEADER (with the CAS
    token as value): they are the emulator's own, neither counted as a client's nor subject to faults.
    """
    from hf_xet import SKIP_SHA256, XetConfig, XetSession

    with _SESSION_LOCK:
        if not _SESSION:
            # Straight to what the emulator serves (no global dedup queries, v1 shards) and no telemetry.
            config = XetConfig().with_config(
                {
                    "deduplication.global_dedup_query_enabled": False,
                    "client.shard_api_version": 1,
                    "telemetry.enabled": False,
                }
            )
            _SESSION.append(XetSession(config))
        session = _SESSION[0]
    expiry = int(time.time()) + 3600
    with session.new_upload_commit(
        endpoint=cas_url, token=token, token_expiry_unix_secs=expiry, custom_headers={INTERNAL_HEADER: token}
    ) as commit:
        handles = [commit.start_upload_file(str(path), sha256=SKIP_SHA256) for path in paths]
    results = [handle.result().xet_info for handle in handles]
    return [(info.hash, info.file_size) for info in results]


def parse_range(header: str | None, total: int) -> tuple[int, int]:
    """Inclusive [first, last] of a `bytes=a-b` header; the whole file when absent."""
    if total == 0:
        return 0, -1
    if not header:
        return 0, total - 1
    try:
        unit, spec = header.split("=", 1)
        a, b = spec.split(",")[0].strip().split("-")
        if unit.strip() != "bytes":
            raise ValueError
        if not a:
            if int(b) <= 0:
                raise HTTPError(416, f"range {header} asks for no bytes")
            return max(0, total - int(b)), total - 1
        first, last = int(a), (int(b) if b else total - 1)
    except ValueError:
        raise HTTPError(400, f"bad Range header {header!r}; expected bytes=FIRST-LAST") from None
    if first >= total or last < first:
        raise HTTPError(416, f"range {header} is outside the file ({total} bytes)")
    return first, min(last, total - 1)
