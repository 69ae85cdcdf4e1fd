"""The calls of a function: their arguments checked like a local call and pickled once, straight into
what is uploaded (`Packer`), with the distributions their objects need noted.

    args, kwargs ──cloudpickle (one pass)──► Spool: memory up to 4 MB, then an unnamed temporary file
        │  the size limit is checked at each write, so a 3 GB argument is refused before 512 MB is written
        │  open files are refused (cloudpickle would read them whole: /dev/zero never ends)
        │  the module of every object pickled by reference is noted (its distribution is installed)
        ▼
    PackedCall ──write_chunk──► the chunk's input file (`[(index, call bytes), ...]`, the entry script's
                                 format), copied a block at a time: no second pickling, no second copy

hfremote's own extra memory for a call is therefore about 4 MB whatever the argument's size (hf_xet's
upload buffers come on top: see benchmarks/client_memory.py). A map reads ahead at most READ_AHEAD_BYTES.
"""

from __future__ import annotations

import functools
import inspect
import io
import pickle
import shutil
import struct
import sys
import tempfile
import threading
import types
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any

import cloudpickle
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from . import _inside
from ._origins import Rules, module_file, refresh, requirement_of
from .errors import OptionsError, PicklingError

MAX_CALL_BYTES = 512 << 20  # one call's pickled arguments
SPOOL_BYTES = 4 << 20  # a call larger than this waits on disk, not in memory
READ_AHEAD_BYTES = 64 << 20  # a map stops reading inputs ahead once this much is packed
_BLOCK = 1 << 20
_lock = threading.Lock()  # cloudpickle's by-value registry is global


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


def describe(fn: Callable[..., Any]) -> str:
    """`module.qualname` of any callable: a function, a method, a functools.partial, a callable instance."""
    if isinstance(fn, functools.partial):
        return describe(fn.func)
    target = fn if hasattr(fn, "__qualname__") else type(fn)
    module = getattr(target, "__module__", None) or "?"
    return f"{module}.{getattr(target, '__qualname__', type(fn).__name__)}"


def qualname(fn: Callable[..., Any]) -> str:
    """The callable's qualified name, for messages (`add`, `Trainer.fit`, `Model`)."""
    if isinstance(fn, functools.partial):
        return qualname(fn.func)
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)


def short_name(fn: Callable[..., Any]) -> str:
    """The callable's own name (`fit`, `pow`, `Model`), for job names."""
    return describe(fn).rpartition(".")[2]


_shipping = threading.local()


def reduce_remote(obj: Any, twin: tuple[Any, ...]) -> str | tuple[Any, ...]:
    """How a remote function or class pickles: as its plain `twin` when it travels into a job (see `_inside`:
    the job has no hfremote, and jobs do not start jobs); otherwise as itself (a copy, a process pool), by
    its name where that name holds it (`@remote def f` is the object at `f`) or by its state."""
    if getattr(_shipping, "depth", 0):
        return twin
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    found: Any = module
    for part in str(getattr(obj, "__qualname__", "")).split("."):
        found = getattr(found, part, None)
    if found is obj:
        return str(obj.__qualname__)
    return object.__reduce_ex__(obj, pickle.HIGHEST_PROTOCOL)


@contextmanager
def by_value(modules: Iterable[types.ModuleType]) -> Iterator[None]:
    """cloudpickle these modules by value (the job cannot import them) while in this block, and remote
    functions and classes as their plain twins (see `reduce_remote`)."""
    with _lock:  # cloudpickle's registry is global
        _shipping.depth = getattr(_shipping, "depth", 0) + 1
        added = []
        for module in [*modules, _inside]:  # a remote function used by the function travels as a LocalFunction
            if module.__name__ not in cloudpickle.list_registry_pickle_by_value():
                cloudpickle.register_pickle_by_value(module)
                added.append(module)
        try:
            yield
        finally:
            for module in added:
                cloudpickle.unregister_pickle_by_value(module)
            _shipping.depth -= 1


def _loaded_local_modules(rules: Rules) -> list[types.ModuleType]:
    """The user's own top-level modules loaded here: an argument may be an instance of a class of theirs
    that the function never names."""
    return [
        module
        for name, module in list(sys.modules.items())
        if "." not in name and isinstance(module, types.ModuleType) and rules.ours(module)
    ]


def pack_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """cloudpickle one call's arguments, checked against the signature like a local call."""
    return Packer(fn).pack(args, kwargs).read()


def pack_calls(fn: Callable[..., Any], calls: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[PackedCall]:
    """`pack_call` for many calls, with one look at the signature and the loaded modules for all of them."""
    return Packer(fn).pack_many(calls)


class Packer:
    """Packs the calls of one function (see `_calls`), and gathers what their arguments need installed.

    The distributions of the objects actually pickled (an ndarray argument, a default, a closure value)
    are installed in the job even when the function never imports them.
    """

    def __init__(self, fn: Callable[..., Any], rules: Rules | None = None) -> None:
        self.fn, self.rules = fn, rules or Rules()
        try:
            self._signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            self._signature = None
        self.requirements: dict[str, str] = {}  # canonical distribution name -> requirement
        self._looked: set[str] = set()
        self._sealed: set[str] | None = None  # the distributions the uploaded entry script installs
        self._warned: set[str] = set()

    def pack(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> PackedCall:
        return self.pack_many([(args, kwargs)])[0]

    def pack_many(self, calls: Iterable[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[PackedCall]:
        refresh()
        with by_value(_loaded_local_modules(self.rules)):
            return [self._pack(args, kwargs) for args, kwargs in calls]

    def take(
        self, calls: Iterator[tuple[tuple[Any, ...], dict[str, Any]]], count: int, budget: int = READ_AHEAD_BYTES
    ) -> tuple[list[PackedCall], bool]:
        """Up to `count` calls read from `calls` and packed one by one, stopping once `budget` bytes are packed
        (read-ahead bounded in bytes, not only in calls); and whether `calls` is exhausted."""
        packed: list[PackedCall] = []
        size = 0
        local = _loaded_local_modules(self.rules)
        while len(packed) < count and size < budget:
            try:
                args, kwargs = next(calls)  # outside the registry's lock: the caller's generator may take its time
            except StopIteration:
                return packed, True
            with by_value(local):
                packed.append(self._pack(args, kwargs))
            del args, kwargs  # the input itself is freed before the next one is made
            size += packed[-1].size
        return packed, False

    def _pack(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> PackedCall:
        where = qualname(self.fn)
        try:
            bound = self._signature.bind(*args, **kwargs) if self._signature is not None else None
        except TypeError as e:
            raise TypeError(f"{where}(): {e}") from None
        modules: set[str] = set()
        try:
            packed = pack_limited((args, kwargs), MAX_CALL_BYTES, modules)
        except OptionsError as e:
            if not isinstance(e, PicklingError):
                raise  # too large
            error: Exception = e
        except Exception as e:
            error = e
        else:
            self._note(packed.modules)
            return packed
        # Name the argument that cannot travel (each is pickled again, into nothing).
        items = bound.arguments.items() if bound is not None else enumerate([*args, *kwargs.values()])
        for name, value in items:
            inner = picklable(value)
            if isinstance(inner, PicklingError):
                raise PicklingError(f"argument {name!r} of {where}(): {inner}") from None
            if inner is not None:
                raise PicklingError(
                    f"argument {name!r} of {where}() ({type(value).__name__}) cannot be pickled: {inner}"
                ) from inner
        raise PicklingError(f"the arguments cannot be pickled: {error}") from error

    def _note(self, modules: Iterable[str]) -> None:
        for name in sorted(set(modules) - self._looked):
            self._looked.add(name)
            module = sys.modules.get(name)
            if module is None or self.rules.ours(module):
                continue  # by value
            requirement = requirement_of(name, module_file(module))
            if requirement is None:
                continue
            dist = canonicalize_name(Requirement(requirement).name)
            self.requirements.setdefault(dist, requirement)
            if self._sealed is not None and dist not in self._sealed and dist not in self._warned:
                self._warned.add(dist)
                warnings.warn(
                    f"an input of this map needs {requirement}, which the first inputs did not: the job's "
                    f"environment was set up already, so add dependencies=[{requirement!r}]",
                    stacklevel=2,
                )

    def dependencies(self, base: Iterable[str]) -> list[str]:
        """`base` plus the arguments' distributions it does not name; the job's environment is fixed then."""
        out = list(base)
        named = {canonicalize_name(Requirement(dep).name) for dep in out} | {"cloudpickle", "hfremote"}
        out += [req for dist, req in sorted(self.requirements.items()) if dist not in named]
        self._sealed = named | set(self.requirements)
        return out
