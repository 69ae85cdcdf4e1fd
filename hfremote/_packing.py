"""Turning a function into bytes the job can run, and finding what the job must install for it.

- The function is pickled by value with cloudpickle, together with the user's own modules and
  packages (see `_origins`: decided from the installed distributions' metadata), which the job could
  not import. Its arguments are packed by `_calls.Packer`.
- Third-party distributions the function (or those local modules) import are detected and pinned to
  the caller's public version, so the job installs what the caller runs. Explicit `dependencies` win.
- Anything that cannot travel is named in the error, before anything is uploaded.
"""

from __future__ import annotations

import dis
import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import sys
import types
import warnings
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import cloudpickle
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ._calls import by_value, dumps, picklable, pickled_size, qualname
from ._inside import InstanceMethod
from ._origins import (
    NEVER_SHIPPED,
    Rules,
    is_ours,
    module_file,
    requirement_of,
    requirement_of_distribution,
    requirements_of_distribution,
)
from .errors import OptionsError, PicklingError

LARGE_FUNCTION_BYTES = 16 << 20  # a function this large when pickled carries data: say which
_NEVER_SHIPPED = NEVER_SHIPPED


def is_local(module: types.ModuleType) -> bool:
    """A module of the user's own, which the job cannot install: it travels by value (see `_origins`)."""
    return is_ours(module)


def _find_spec(name: str) -> Any:
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


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
    """(name, value) of the globals and closure variables a function uses (for a remote class's method, the
    constructor's arguments, which travel with it)."""
    if isinstance(fn, InstanceMethod):
        yield from ((f"argument {i + 1} of {fn.cls.__qualname__}()", v) for i, v in enumerate(fn.args))
        yield from ((f"{fn.cls.__qualname__}({k}=...)", v) for k, v in fn.kwargs.items())
        fn = getattr(fn.cls, fn.name)
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

    def __init__(self, fn: Callable[..., Any], ship: Iterable[str] = (), pin: Iterable[str] = ()) -> None:
        self.rules = Rules(ship, pin)
        for name in self.rules.ship:
            if name not in sys.modules and _find_spec(name) is None:
                raise OptionsError(
                    f"ship=[{name!r}]: no module {name!r} can be imported here; name a module or package of yours "
                    "that the function uses (it travels by value)"
                )
        self.local: dict[str, types.ModuleType] = {}
        self.body_imports: dict[str, types.ModuleType] = {}  # local modules the job must be able to import
        self.imports: set[str] = set()  # top-level names of the modules the job must install (or has)
        self.installed: dict[str, str | None] = {}  # module name -> its file, for the modules installed in the job
        self._files: dict[str, set[str]] = {}  # code name -> the files it is defined in
        self._seen: set[int] = set()
        self._visit_callable(fn)

    def _visit_callable(self, fn: Any) -> None:
        """A function, or what wraps one: a bound method, a partial, a callable instance, a RemoteFunction."""
        if isinstance(fn, types.MethodType):
            self._visit_value(fn.__self__)
            fn = fn.__func__
        if isinstance(fn, functools.partial):
            self._visit_callable(fn.func)
            for value in [*fn.args, *fn.keywords.values()]:
                self._visit_value(value)
        elif inspect.isfunction(fn):
            self._visit_function(fn)
        elif callable(fn) and not inspect.isbuiltin(fn) and not isinstance(fn, type):
            self._visit_value(type(fn))  # a callable instance: its class (and its __call__) travel
            for value in list(getattr(fn, "__dict__", {}).values())[:100]:
                self._visit_value(value)
        else:
            self._visit_value(fn)

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
        file = module_file(module) if module is not None else None
        if module is None:
            file = getattr(_find_spec(name), "origin", None)
            if file and self.rules.ours_file(name, file):
                module = importlib.import_module(name)  # to ship it, it must be loaded here
        if module is None or not self.rules.ours(module):
            self.imports.add(top)
            self.installed.setdefault(name, file)
            return
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            found = sys.modules.get(".".join(parts[:depth]))
            if found is not None and self.rules.ours(found):
                self.body_imports[found.__name__] = found
        self._visit_module(module, whole=True)

    def _visit_value(self, value: Any) -> None:
        wrapped = getattr(value, "__wrapped__", None)  # a RemoteFunction (or functools.wraps) used by the function
        if wrapped is not None and callable(wrapped) and not isinstance(value, type) and id(value) not in self._seen:
            self._seen.add(id(value))
            self._visit_callable(wrapped)
        module = _module_of(value)
        if module is not None:
            self._visit_module(module, whole=isinstance(value, types.ModuleType))
        ours = module is None or module.__name__ == "__main__" or self.rules.ours(module)
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
        if not self.rules.ours(module):
            self.imports.add(name.partition(".")[0])
            self.installed.setdefault(name, module_file(module))
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


def pinned_dependencies(scan: Scan, explicit: Iterable[str]) -> list[str]:
    """`explicit`, the `pin`ned distributions, and `dist==version` for every distribution the job needs.

    Needed are the distributions of the modules the function reaches (imports, globals, bases, the
    classes of the arguments: see `PackedCall.modules`), and the dependencies of the distributions that
    travel by value (an editable install's `requires`). Explicit `dependencies` win over detected pins.
    """
    explicit = list(explicit)
    named: set[str] = {canonicalize_name(Requirement(dep).name) for dep in explicit}
    named |= {"cloudpickle", "hfremote"}  # cloudpickle is pinned by the entry script itself
    wanted: list[str] = []
    for name in scan.rules.pin:
        found = requirement_of_distribution(name)
        if found is None:
            raise OptionsError(
                f"pin=[{name!r}]: no installed distribution provides {name!r} here; install it, or use "
                f"dependencies=[{name!r}] to have the job install it from the package index"
            )
        wanted.append(found)
    local_tops = {name.partition(".")[0] for name in scan.local}
    for name, file in sorted(scan.installed.items()):
        if name.partition(".")[0] not in local_tops:
            wanted += [r] if (r := requirement_of(name, file)) else []
    for name, module in sorted(scan.local.items()):
        wanted += requirements_of_distribution(name, module_file(module))
    pins = []
    for requirement in wanted:
        dist = canonicalize_name(Requirement(requirement).name)
        if dist not in named:
            pins.append(requirement)
            named.add(dist)
    return [*explicit, *sorted(pins, key=str.lower)]


def check_function(fn: Callable[..., Any], allow_async: bool = True) -> None:
    """A function that can run as a job; an `async def` one runs on an event loop there (see `_entry._Loop`)."""
    if not callable(fn):
        raise OptionsError(f"remote() needs a function, got {fn!r}")
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise OptionsError(
            f"{qualname(fn)} is a generator function: a remote function must return its "
            "result (return a list instead of yielding)"
        )
    if not allow_async and inspect.iscoroutinefunction(fn):
        raise OptionsError(
            f"{qualname(fn)} is async: a scheduled function must be a plain (synchronous) function; "
            "call asyncio.run(...) inside one"
        )


def pack_function(fn: Callable[..., Any], scan: Scan) -> bytes:
    """cloudpickle `{"function": fn, "modules": {name: module}}` with the user's local modules by value.

    `modules` are the local modules the function imports in its body; the job installs them in
    `sys.modules` before the call. Whatever the pickle refers to by reference (the class of a default
    value, of a closure value, of a class attribute) is added to `scan.installed`, so its distribution
    is installed in the job.
    """
    modules = []
    for name in sorted(scan.local):
        top = sys.modules.get(name.partition(".")[0])
        modules.append(top if top is not None and scan.rules.ours(top) else scan.local[name])
    referenced: set[str] = set()
    with by_value(modules):
        try:
            data = dumps({"function": fn, "modules": scan.body_imports}, referenced)
        except Exception as e:
            raise PicklingError(_culprit_of_function(fn, e)) from e
        if len(data) > LARGE_FUNCTION_BYTES:
            _warn_large_captures(fn, len(data))
    for name in sorted(referenced):
        module = sys.modules.get(name)
        if module is not None and not scan.rules.ours(module):
            scan.imports.add(name.partition(".")[0])
            scan.installed.setdefault(name, module_file(module))
    return data


def _warn_large_captures(fn: Callable[..., Any], total: int) -> None:
    """Name the globals and closure values that make the function large: they travel silently otherwise."""
    sizes = []
    for name, value in _referenced(fn):
        if isinstance(value, (types.ModuleType, type)) or inspect.isfunction(value):
            continue
        size = pickled_size(value)
        if size is not None and size >= LARGE_FUNCTION_BYTES // 4:
            sizes.append((size, name, type(value).__name__))
    found = ", ".join(f"{name!r} ({kind}, {size / 1e6:.0f} MB)" for size, name, kind in sorted(sizes, reverse=True)[:3])
    warnings.warn(
        f"{qualname(fn)} pickles to {total / 1e6:.0f} MB because it captures {found or 'large values'}: they are "
        "uploaded with every run. Load them inside the function, or pass a path and mount the data with "
        "volumes=[...]",
        stacklevel=5,
    )


def _culprit_of_function(fn: Callable[..., Any], error: Exception) -> str:
    where = qualname(fn)
    for name, value in _referenced(fn):
        if isinstance(value, types.ModuleType):
            continue
        e = picklable(value)
        if e is not None:
            return (
                f"{where} cannot be shipped to the job: it uses {name!r} ({type(value).__name__}), which cannot be "
                f"pickled: {e}. Create it inside the "
                + ("class's __init__ or a setup method" if isinstance(fn, InstanceMethod) else "function")
                + " instead"
            )
    return f"{where} cannot be pickled: {type(error).__name__}: {error}"


def render_entry(python: str, dependencies: Iterable[str]) -> str:
    """The job's entry script: `_entry.py` with a PEP 723 header pinning Python and cloudpickle."""
    deps = [f"cloudpickle=={cloudpickle.__version__}", *dependencies]
    header = ["# /// script", f'# requires-python = "=={python}.*"', "# dependencies = ["]
    header += [f"#     {json.dumps(dep)}," for dep in deps] + ["# ]", "# ///"]
    return "\n".join(header) + "\n" + _entry_source()


@lru_cache(maxsize=1)
def _entry_source() -> str:
    return Path(__file__).with_name("_entry.py").read_text(encoding="utf-8")
