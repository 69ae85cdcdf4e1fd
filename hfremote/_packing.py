"""Turning a call into bytes the job can run: the function, its arguments, and what it needs installed.

- The function is pickled by value with cloudpickle, together with the user's own local modules and
  packages (those not installed in site-packages), which the job could not import.
- Third-party distributions the function (or those local modules) import are detected and pinned to
  the caller's public version, so the job installs what the caller runs. Explicit `dependencies` win.
- Anything that cannot travel is named in the error, before anything is uploaded.
"""

from __future__ import annotations

import dis
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import site
import sys
import sysconfig
import threading
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import cloudpickle
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .errors import OptionsError, PicklingError

MAX_CALL_BYTES = 512 << 20
_NEVER_SHIPPED = {"hfremote", "cloudpickle", "__main__", "builtins"}
_lock = threading.Lock()


@lru_cache(maxsize=1)
def _installed_roots() -> tuple[str, ...]:
    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    paths.add(site.getusersitepackages() if hasattr(site, "getusersitepackages") else "")
    paths.add(sys.base_prefix)
    return tuple(str(Path(p).resolve()) for p in paths if p)


def is_local(module: types.ModuleType) -> bool:
    """A module of the user's own (a script, a folder on sys.path), which the job cannot import."""
    top = module.__name__.partition(".")[0]
    if top in _NEVER_SHIPPED or top in sys.stdlib_module_names:
        return False
    file = getattr(module, "__file__", None)
    if not file:
        return False
    return _local_file(str(file))


@lru_cache(maxsize=8192)
def _local_file(file: str) -> bool:
    # Cached: every packed call looks at every loaded module, and resolving a path costs system calls.
    return not str(Path(file).resolve()).startswith(_installed_roots())


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _imported_names(code: types.CodeType) -> set[str]:
    """Names of the modules imported inside the function's own body (absolute imports)."""
    names = set()
    for co in _code_objects(code):
        for ins in dis.get_instructions(co):
            if ins.opname == "IMPORT_NAME" and isinstance(ins.argval, str) and ins.argval:
                names.add(ins.argval)
    return names


def _referenced(fn: Callable[..., Any]) -> Iterator[tuple[str, Any]]:
    """(name, value) of the globals and closure variables a function uses."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return
    globals_ = getattr(fn, "__globals__", {})
    for co in _code_objects(code):
        for name in co.co_names:
            if name in globals_:
                yield name, globals_[name]
    for name, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or (), strict=False):
        try:
            yield name, cell.cell_contents
        except ValueError:  # an empty cell
            continue


def _module_of(value: Any) -> types.ModuleType | None:
    if isinstance(value, types.ModuleType):
        return value
    name = getattr(value, "__module__", None)
    if not isinstance(name, str):  # instances of C types (msgspec.json.Encoder(), ...) have no __module__
        name = getattr(type(value), "__module__", None)
    return sys.modules.get(name) if isinstance(name, str) else None


class Scan:
    """The local modules to ship by value and the top-level third-party modules to install.

    Only what the function reaches is scanned: its globals and closure, the functions and classes
    of the user's own that it uses (recursively), and whole local modules it refers to by name.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.local: dict[str, types.ModuleType] = {}
        self.body_imports: dict[str, types.ModuleType] = {}  # local modules the job must be able to import
        self.imports: set[str] = set()
        self._files: dict[str, set[str]] = {}  # code name -> the files it is defined in
        self._seen: set[int] = set()
        self._visit_function(fn)

    @property
    def code_files(self) -> dict[str, str]:
        """The file of each function that travels, by name (where that name is defined in one file only).

        cloudpickle ships code as "<dynamic-code>", so a remote traceback names no file; this lets the
        client point those frames back at the caller's source.
        """
        return {name: next(iter(files)) for name, files in self._files.items() if len(files) == 1}

    def _visit_function(self, fn: Callable[..., Any]) -> None:
        if id(fn) in self._seen:
            return
        self._seen.add(id(fn))
        code = getattr(fn, "__code__", None)
        for name in _imported_names(code) if code is not None else ():
            self._visit_import(name)
        for co in _code_objects(code) if code is not None else ():
            self._files.setdefault(co.co_name, set()).add(co.co_filename)
        home = _module_of(fn)
        if home is not None:
            self._visit_module(home, whole=False)  # it travels by value, but only what fn uses is needed
        for _, value in _referenced(fn):
            self._visit_value(value)

    def _visit_import(self, name: str) -> None:
        """A module imported inside a function body: installed in the job, or shipped if it is the user's own.

        The import statement runs in the job, so a local module must be there under its name: it is
        shipped whole (with its parent packages) and the entry script puts it in `sys.modules`.
        """
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top in _NEVER_SHIPPED:
            self.imports.add(top)  # never installed: pinned_dependencies leaves these out
            return
        module = sys.modules.get(name)
        if module is None:
            try:
                spec = importlib.util.find_spec(name)
            except (ImportError, ValueError):
                spec = None
            origin = getattr(spec, "origin", None)
            if origin and not str(Path(origin).resolve()).startswith(_installed_roots()):
                module = importlib.import_module(name)  # to ship it, it must be loaded here
        if module is None or not is_local(module):
            self.imports.add(top)
            return
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            found = sys.modules.get(".".join(parts[:depth]))
            if found is not None and is_local(found):
                self.body_imports[found.__name__] = found
        self._visit_module(module, whole=True)

    def _visit_value(self, value: Any) -> None:
        module = _module_of(value)
        if module is not None:
            self._visit_module(module, whole=isinstance(value, types.ModuleType))
        ours = module is None or module.__name__ == "__main__" or is_local(module)
        if ours and inspect.isfunction(value):
            self._visit_function(value)
        elif ours and inspect.isclass(value) and id(value) not in self._seen:
            self._seen.add(id(value))
            for base in value.__bases__:  # the class travels by value; its bases (msgspec.Struct, ...) must import
                self._visit_value(base)
            for member in list(vars(value).values()):
                member = getattr(member, "__func__", member)  # static and class methods
                accessors = (member.fget, member.fset, member.fdel) if isinstance(member, property) else (member,)
                for item in accessors:
                    if inspect.isfunction(item):
                        self._visit_function(item)
                    elif item is not None and not isinstance(item, str):
                        self._visit_value(item)  # class attributes: instances of third-party classes, nested classes
        elif isinstance(value, (list, tuple, set, frozenset, dict)) and id(value) in self._seen:
            return  # a container that holds itself
        elif isinstance(value, (list, tuple, set, frozenset)):
            self._seen.add(id(value))
            for item in list(value)[:100]:
                self._visit_value(item)
        elif isinstance(value, dict):
            self._seen.add(id(value))
            for item in list(value.values())[:100]:
                self._visit_value(item)

    def _visit_module(self, module: types.ModuleType, whole: bool) -> None:
        name = module.__name__
        if name == "__main__":
            return
        if not is_local(module):
            self.imports.add(name.partition(".")[0])
            return
        self.local[name] = module
        if not whole or id(module) in self._seen:
            return
        self._seen.add(id(module))
        for value in list(vars(module).values()):
            found = _module_of(value)
            if found is module and (inspect.isfunction(value) or inspect.isclass(value)):
                self._visit_value(value)
            elif isinstance(value, types.ModuleType):
                self._visit_module(value, whole=True)


@lru_cache(maxsize=1)
def _distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _public_version(dist: str) -> str | None:
    try:
        return Version(importlib.metadata.version(dist)).public
    except (importlib.metadata.PackageNotFoundError, InvalidVersion):
        return None


def pinned_dependencies(scan: Scan, explicit: Iterable[str]) -> list[str]:
    """`explicit` plus `dist==version` for every detected third-party import not named in it."""
    named: set[str] = {canonicalize_name(Requirement(dep).name) for dep in explicit}
    named |= {"cloudpickle", "hfremote"}  # cloudpickle is pinned by the entry script itself
    pins = []
    local_tops = {name.partition(".")[0] for name in scan.local}
    for top in sorted(scan.imports - local_tops - set(sys.stdlib_module_names) - _NEVER_SHIPPED):
        for dist in _distributions().get(top, []):
            if canonicalize_name(dist) in named:
                continue
            version = _public_version(dist)
            if version is not None:
                pins.append(f"{dist}=={version}")
                named.add(canonicalize_name(dist))
    return [*explicit, *pins]


def check_function(fn: Callable[..., Any]) -> None:
    if not callable(fn):
        raise OptionsError(f"remote() needs a function, got {fn!r}")
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise OptionsError(
            f"{getattr(fn, '__qualname__', fn)} is a generator function: a remote function must return its "
            "result (return a list instead of yielding)"
        )
    if inspect.iscoroutinefunction(fn):
        raise OptionsError(f"{fn.__qualname__} is async: remote functions must be plain (synchronous) functions")


def pack_function(fn: Callable[..., Any], scan: Scan) -> bytes:
    """cloudpickle `{"function": fn, "modules": {name: module}}` with the user's local modules by value.

    `modules` are the local modules the function imports in its body; the job installs them in
    `sys.modules` before the call.
    """
    modules = []
    for name in sorted(scan.local):
        top = sys.modules.get(name.partition(".")[0])
        modules.append(top if top is not None and is_local(top) else scan.local[name])
    with _by_value(modules):
        try:
            data: bytes = cloudpickle.dumps({"function": fn, "modules": scan.body_imports})
            return data
        except Exception as e:
            raise PicklingError(_culprit_of_function(fn, e)) from e


def _culprit_of_function(fn: Callable[..., Any], error: Exception) -> str:
    where = getattr(fn, "__qualname__", repr(fn))
    for name, value in _referenced(fn):
        if isinstance(value, types.ModuleType):
            continue
        try:
            cloudpickle.dumps(value)
        except Exception as e:
            return (
                f"{where} cannot be shipped to the job: it uses {name!r} ({type(value).__name__}), which cannot be "
                f"pickled: {e}. Create it inside the function instead"
            )
    return f"{where} cannot be pickled: {type(error).__name__}: {error}"


@contextmanager
def _by_value(modules: Iterable[types.ModuleType]) -> Iterator[None]:
    """cloudpickle these modules by value (the job cannot import them) while in this block."""
    with _lock:  # cloudpickle's registry is global
        added = []
        for module in modules:
            if module.__name__ not in cloudpickle.list_registry_pickle_by_value():
                cloudpickle.register_pickle_by_value(module)
                added.append(module)
        try:
            yield
        finally:
            for module in added:
                cloudpickle.unregister_pickle_by_value(module)


def _loaded_local_modules() -> list[types.ModuleType]:
    """The user's own top-level modules loaded here: an argument may be an instance of a class of theirs
    that the function never names."""
    return [
        module
        for name, module in list(sys.modules.items())
        if "." not in name and isinstance(module, types.ModuleType) and is_local(module)
    ]


def pack_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """cloudpickle one call's arguments, checked against the signature like a local call."""
    return pack_calls(fn, [(args, kwargs)])[0]


def pack_calls(fn: Callable[..., Any], calls: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[bytes]:
    """`pack_call` for many calls, with one look at the signature and the loaded modules for all of them."""
    try:
        signature: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):
        signature = None
    with _by_value(_loaded_local_modules()):
        return [_pack(fn, signature, args, kwargs) for args, kwargs in calls]


def _pack(
    fn: Callable[..., Any], signature: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> bytes:
    try:
        bound = signature.bind(*args, **kwargs) if signature is not None else None
    except TypeError as e:
        raise TypeError(f"{getattr(fn, '__qualname__', fn)}(): {e}") from None
    try:
        data: bytes = cloudpickle.dumps((args, kwargs))
    except Exception as e:
        items = bound.arguments.items() if bound is not None else enumerate([*args, *kwargs.values()])
        for name, value in items:
            try:
                cloudpickle.dumps(value)
            except Exception as inner:
                raise PicklingError(
                    f"argument {name!r} of {getattr(fn, '__qualname__', fn)}() ({type(value).__name__}) cannot be "
                    f"pickled: {inner}"
                ) from inner
        raise PicklingError(f"the arguments cannot be pickled: {e}") from e
    if len(data) > MAX_CALL_BYTES:
        raise OptionsError(
            f"the arguments of this call pickle to {len(data) / 1e6:.0f} MB; the limit is {MAX_CALL_BYTES / 1e6:.0f} "
            "MB. Put large data in a bucket or Hub repo and mount it with volumes=[...], or pass a path or URL"
        )
    return data


def render_entry(python: str, dependencies: Iterable[str]) -> str:
    """The job's entry script: `_entry.py` with a PEP 723 header pinning Python and cloudpickle."""
    deps = [f"cloudpickle=={cloudpickle.__version__}", *dependencies]
    header = ["# /// script", f'# requires-python = "=={python}.*"', "# dependencies = ["]
    header += [f"#     {json.dumps(dep)}," for dep in deps] + ["# ]", "# ///"]
    return "\n".join(header) + "\n" + _entry_source()


@lru_cache(maxsize=1)
def _entry_source() -> str:
    return Path(__file__).with_name("_entry.py").read_text(encoding="utf-8")
