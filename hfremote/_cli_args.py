"""A function's arguments from the command line, parsed from its signature as `modal run` does.

    def train(lr: float, epochs: int = 2, tags: list[str] | None = None, fp16: bool = False)
    hfremote run train.py::train --lr 3e-4 --epochs 3 --tags a b --fp16

Annotations choose the type (int, float, str, Path, bool as --x/--no-x, list[...] as several values,
Literal[...] as choices, X | None as X); a parameter without a default is a required option.
"""

from __future__ import annotations

import argparse
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_UNIONS = (typing.Union, getattr(types, "UnionType", typing.Union))  # X | None is types.UnionType
_SCALARS: dict[Any, Callable[[str], Any]] = {int: int, float: float, str: str, Path: Path}


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # an annotation naming something that cannot be imported here: read it as a string
        return {}


def _strip_optional(annotation: Any) -> Any:
    args = typing.get_args(annotation)
    if args and type(None) in args and typing.get_origin(annotation) in _UNIONS:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _describe(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def add_parameter(parser: argparse.ArgumentParser, param: inspect.Parameter, annotation: Any) -> None:
    """One option for one parameter of the function."""
    flags = [f"--{param.name.replace('_', '-')}"]
    if "_" in param.name:
        flags.append(f"--{param.name}")
    required = param.default is inspect.Parameter.empty
    kwargs: dict[str, Any] = {"dest": param.name, "required": required}
    if not required:
        kwargs["default"] = param.default
    annotation = _strip_optional(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    shown = "" if required else f" (default: {param.default!r})"
    if annotation is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
        kwargs["help"] = f"bool{shown}"
    elif origin in (list, tuple, set, Sequence) or annotation in (list, tuple, set):
        item = args[0] if args else str
        kwargs.update(nargs="+" if required else "*", type=_SCALARS.get(item, str), metavar=_describe(item).upper())
        kwargs["help"] = f"{_describe(annotation)}{shown}"
    elif origin is typing.Literal:
        kinds = {type(a) for a in args}
        convert = _SCALARS.get(kinds.pop(), str) if len(kinds) == 1 else str
        kwargs.update(type=convert, choices=list(args), help=f"one of {', '.join(map(str, args))}{shown}")
    else:
        if annotation is inspect.Parameter.empty and not required and type(param.default) in _SCALARS:
            annotation = type(param.default)
        convert = _SCALARS.get(annotation, str)
        name = _describe(annotation) if annotation in _SCALARS else "str"
        kwargs.update(type=convert, metavar=name.upper(), help=f"{name}{shown}")
    parser.add_argument(*flags, **kwargs)


def call_parser(fn: Callable[..., Any], prog: str) -> tuple[argparse.ArgumentParser, list[inspect.Parameter]]:
    """A parser of `fn`'s parameters (the caller may add its own options to it)."""
    doc = inspect.getdoc(fn)
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0] if doc else None)
    hints = _hints(fn)
    params = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue  # *args and **kwargs cannot be named on a command line
        add_parameter(parser, param, hints.get(param.name, param.annotation))
        params.append(param)
    return parser, params


def split_call(params: list[inspect.Parameter], values: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and keyword arguments of the call, from the parsed options."""
    args = tuple(values[p.name] for p in params if p.kind is p.POSITIONAL_ONLY)
    kwargs = {p.name: values[p.name] for p in params if p.kind is not p.POSITIONAL_ONLY}
    return args, kwargs


def parse_call(fn: Callable[..., Any], argv: Sequence[str], prog: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """`fn`'s arguments from `argv`; a missing or wrong one exits with argparse's usage message."""
    parser, params = call_parser(fn, prog)
    values = vars(parser.parse_args(list(argv)))
    return split_call(params, values)


def usage_hint(fn: Callable[..., Any], prog: str) -> str:
    parser, _ = call_parser(fn, prog)
    return parser.format_usage().strip()
