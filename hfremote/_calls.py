"""One call's arguments, pickled once, straight into what is uploaded.

    args, kwargs ──cloudpickle (one pass)──► Spool: memory up to 4 MB, then an unnamed temporary file
        │  the size limit is checked at each write, so a 3 GB argument is refused before 512 MB is written
        │  open files are refused (cloudpickle would read them whole: /dev/zero never ends)
        │  the module of every object pickled by reference is noted (its distribution is installed)
        ▼
    PackedCall ──write_chunk──► the chunk's input file (`[(index, call bytes), ...]`, the entry script's
                                 format), copied a block at a time: no second pickling, no second copy

The client's extra memory for a call is therefore about 4 MB whatever the argument's size.
"""

from __future__ import annotations

import io
import pickle
import shutil
import struct
import tempfile
import types
from collections.abc import Iterable
from typing import IO, Any

import cloudpickle

from .errors import OptionsError, PicklingError

SPOOL_BYTES = 4 << 20  # a call larger than this waits on disk, not in memory
READ_AHEAD_BYTES = 64 << 20  # a map stops reading inputs ahead once this much is packed
_BLOCK = 1 << 20


class TooLarge(Exception):
    """Raised from inside the pickler when the output passes the limit."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


class Spool:
    """A write-only sink for the pickler: bytes in memory while small, in a temporary file past SPOOL_BYTES."""

    def __init__(self, limit: int | None) -> None:
        self.limit, self.size = limit, 0
        self._memory: bytearray | None = bytearray()
        self._file: IO[bytes] | None = None

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        if self.limit is not None and self.size + n > self.limit:
            raise TooLarge(self.size + n)  # before the bytes are kept anywhere
        if self._memory is not None and self.size + n > SPOOL_BYTES:
            self._file = tempfile.TemporaryFile(prefix="hfremote-call-")  # noqa: SIM115 (closed by close())
            self._file.write(self._memory)
            self._memory = None
        if self._memory is not None:
            self._memory += data
        else:
            assert self._file is not None
            self._file.write(data)
        self.size += n
        return n

    def copy_to(self, out: IO[bytes]) -> None:
        if self._memory is not None:
            out.write(self._memory)
            return
        assert self._file is not None
        self._file.flush()
        self._file.seek(0)
        shutil.copyfileobj(self._file, out, _BLOCK)
        self._file.seek(0, io.SEEK_END)

    def read(self) -> bytes:
        out = io.BytesIO()
        self.copy_to(out)
        return out.getvalue()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _Null:
    def write(self, data: Any) -> int:
        return memoryview(data).nbytes


class Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle's pickler that notes the modules of what it pickles by reference, and refuses open files."""

    def __init__(self, file: Any, modules: set[str]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.modules = modules

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, io.IOBase):
            raise PicklingError(
                f"an open file ({getattr(obj, 'name', type(obj).__name__)!r}) cannot travel to the job: pass its "
                "path instead, with the file in a bucket or Hub repo mounted with volumes=[...] (or its contents, "
                "read here, if it is small)"
            )
        if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
            name = getattr(obj, "__module__", None)
        else:
            name = getattr(type(obj), "__module__", None)
        if isinstance(name, str):
            self.modules.add(name)
        return super().reducer_override(obj)


def dump(obj: Any, limit: int | None, modules: set[str]) -> Spool:
    """Pickle `obj` once into a Spool; `TooLarge` past `limit` bytes."""
    spool = Spool(limit)
    try:
        Pickler(spool, modules).dump(obj)
    except BaseException:
        spool.close()
        raise
    return spool


def dumps(obj: Any, modules: set[str] | None = None) -> bytes:
    """Pickle `obj` in memory (small things: the function, a schedule's call), with the same checks."""
    out = io.BytesIO()
    Pickler(out, modules if modules is not None else set()).dump(obj)
    return out.getvalue()


class _Counter:
    def __init__(self) -> None:
        self.size = 0

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        self.size += n
        return n


def pickled_size(obj: Any) -> int | None:
    """How many bytes `obj` pickles to (counted, not kept), or None if it cannot be pickled."""
    counter = _Counter()
    try:
        Pickler(counter, set()).dump(obj)
    except Exception:
        return None
    return counter.size


def picklable(obj: Any) -> Exception | None:
    """Why `obj` cannot be pickled, or None (nothing is kept: the output is discarded as it is made)."""
    try:
        Pickler(_Null(), set()).dump(obj)
    except Exception as e:
        return e
    return None


class PackedCall:
    """One call's pickled `(args, kwargs)`, and the modules of the objects pickled by reference."""

    def __init__(self, spool: Spool, modules: Iterable[str]) -> None:
        self._spool = spool
        self.size = spool.size
        self.modules = frozenset(modules)

    def copy_to(self, out: IO[bytes]) -> None:
        self._spool.copy_to(out)

    def read(self) -> bytes:
        return self._spool.read()

    def __len__(self) -> int:
        return self.size

    def __del__(self) -> None:
        self._spool.close()


def pack_limited(call: tuple[tuple[Any, ...], dict[str, Any]], limit: int, modules: set[str]) -> PackedCall:
    try:
        spool = dump(call, limit, modules)
    except TooLarge as e:
        raise OptionsError(
            f"the arguments of this call pickle to more than {e.size / 1e6:.0f} MB; the limit is {limit / 1e6:.0f} "
            "MB. Put large data in a bucket or Hub repo and mount it with volumes=[...], or pass a path or URL"
        ) from None
    return PackedCall(spool, modules)


# A chunk's input file is one pickle of `[(index, call bytes), ...]`, written here opcode by opcode so each
# call's bytes are copied from its spool rather than pickled again (see pickle.py for the opcodes).
_HEAD = pickle.PROTO + bytes([5]) + pickle.EMPTY_LIST + pickle.MARK
_TAIL = pickle.APPENDS + pickle.STOP


def write_chunk(calls: Iterable[tuple[int, PackedCall | bytes]], out: IO[bytes]) -> None:
    out.write(_HEAD)
    for index, call in calls:
        size = call.size if isinstance(call, PackedCall) else len(call)
        out.write(pickle.LONG1 + bytes([8]) + struct.pack("<q", index))
        out.write(pickle.BINBYTES8 + struct.pack("<Q", size))
        if isinstance(call, PackedCall):
            call.copy_to(out)
        else:
            out.write(call)
        out.write(pickle.TUPLE2)
    out.write(_TAIL)
