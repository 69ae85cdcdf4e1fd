"""Remote classes: state built once per job, then used for every input that job runs.

    @remote(flavor="a10g-small")
    class Embedder:
        def __init__(self, name: str) -> None:
            self.name = name

        @setup
        def load(self) -> None:          # runs once in each job, after __init__
            self.model = load_model(self.name)

        def embed(self, text: str) -> list[float]:
            return self.model.encode(text)

    Embedder("bge-small").embed("hello")                          # one job
    Embedder("bge-small").embed.map(texts, chunksize=256)         # a job per 256 texts, one model load each

`Embedder("bge-small")` builds nothing here: it is a handle holding the constructor's arguments, checked
against `__init__` at once. Each of its public methods is a `RemoteFunction` whose function is an
`_inside.InstanceMethod`: the class and the arguments travel once per run, and each job builds the
instance (and runs its setup methods) at its first input and keeps it for the rest of its chunk.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import msgspec

from ._calls import qualname, reduce_remote
from ._inside import SETUP_MARK, Built, InstanceMethod, LocalInstance, same, setup_methods
from ._options import Options, build
from .errors import OptionsError

if TYPE_CHECKING:
    from ._function import RemoteFunction

T = TypeVar("T")
_CALL_FACES = frozenset({"submit", "map", "starmap", "local", "map_cost", "aio"})  # of a callable class's handle
F = TypeVar("F", bound=Callable[..., Any])


def setup(method: F) -> F:
    """Mark a method of a remote class to run once in each job, after `__init__`, before the job's first input
    (load weights, warm a cache). Called here too when a method runs locally (`.local`)."""
    if not callable(method):
        raise TypeError(f"hfremote.setup marks a method, got {method!r}")
    setattr(method, SETUP_MARK, True)
    return method


class RemoteClass(Generic[T]):
    """A class whose instances live in jobs: `Cls(*args)` is a handle; `Cls(*args).method(...)` runs there.

    Otherwise it stands for the class: `isinstance(x, Cls)`, `Cls.some_classmethod(...)`, `class Sub(Cls)`
    (a plain subclass) work, and inside a job the name is the plain class itself.
    """

    def __init__(self, cls: type[T], options: Options) -> None:
        if not isinstance(cls, type):
            raise OptionsError(f"RemoteClass needs a class, got {cls!r}")
        _check_setups(cls)
        self._cls, self._options = cls, options
        self.__name__, self.__qualname__ = cls.__name__, cls.__qualname__
        self.__module__, self.__doc__ = cls.__module__, cls.__doc__

    @property
    def cls(self) -> type[T]:
        return self._cls

    @property
    def settings(self) -> Options:
        return self._options

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self._cls)

    def options(self, **overrides: Any) -> RemoteClass[T]:
        """A copy with some options changed: `Embedder.options(flavor="a100-large")("bge-large")`."""
        return RemoteClass(self._cls, build(self._options, **overrides))

    def __call__(self, *args: Any, **kwargs: Any) -> RemoteInstance[T]:
        if inspect.isabstract(self._cls):
            missing = ", ".join(sorted(getattr(self._cls, "__abstractmethods__", ())))
            raise TypeError(f"Can't instantiate abstract class {self.__qualname__} (abstract: {missing})")
        try:
            inspect.signature(self._cls).bind(*args, **kwargs)
        except TypeError as e:  # as a local call would say it, before anything travels
            raise TypeError(f"{self.__qualname__}(): {e}") from None
        except ValueError:  # no signature to check against (a class implemented in C)
            pass
        return RemoteInstance(self, args, kwargs)

    # -- standing for the class ------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._cls, name)  # class attributes, classmethods, staticmethods: plain, here

    def __instancecheck__(self, instance: Any) -> bool:
        return isinstance(instance, self._cls)

    def __subclasscheck__(self, subclass: type) -> bool:
        return issubclass(subclass, self._cls)

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        return (self._cls,)  # `class Sub(RemoteBase)` subclasses the plain class (make it remote with @remote)

    def __getitem__(self, parameters: Any) -> RemoteClass[T]:
        return self  # `Model[int](...)`: the parameters only matter to type checkers

    def __reduce_ex__(self, protocol: Any) -> str | tuple[Any, ...]:
        # Into a job (a function there uses the class, or the class's own methods name it): the plain class.
        return reduce_remote(self, (same, (self._cls,)))

    def __repr__(self) -> str:
        return f"<RemoteClass {self.__module__}.{self.__qualname__} flavor={self._options.flavor}>"


def _check_setups(cls: type) -> None:
    """Setup methods take only `self`, and return (async ones are awaited): refused now, not in a job."""
    for name in setup_methods(cls):
        method = inspect.getattr_static(cls, name)
        if isinstance(method, (staticmethod, classmethod)) or inspect.isgeneratorfunction(method):
            raise OptionsError(f"@setup {cls.__qualname__}.{name} must be a plain method taking only self")
        try:
            inspect.signature(method).bind(None)
        except TypeError:
            raise OptionsError(
                f"@setup {cls.__qualname__}.{name} must take only self: it runs once per job with no arguments"
            ) from None
        except ValueError:
            pass


def _callable(cls: type) -> bool:
    """Whether instances of `cls` are callable (every class has a metaclass `__call__`: that one does not count)."""
    return any("__call__" in vars(klass) for klass in cls.__mro__ if klass is not object)


def _own_options(method_options: Options, class_options: Options) -> Options:
    """A method's own `@remote(...)` options over its class's: those it sets win, the rest are the class's."""
    defaults = Options()
    own = {
        field: getattr(method_options, field)
        for field in Options.__struct_fields__
        if getattr(method_options, field) != getattr(defaults, field)
    }
    return msgspec.structs.replace(class_options, **own)


class RemoteInstance(Generic[T]):
    """A remote class's instance as seen from here: its public methods are remote functions."""

    def __init__(self, owner: RemoteClass[T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._owner, self._args, self._kwargs = owner, args, kwargs
        self._methods: dict[str, RemoteFunction[..., Any]] = {}
        self._built = Built()  # `.local` calls of its methods share one instance here

    def __getattr__(self, name: str) -> RemoteFunction[..., Any]:
        if name.startswith("_"):  # dunders (pickle, copy, IPython probing) and private names stay here
            raise AttributeError(name)
        if name in _CALL_FACES and _callable(self._owner.cls) and not hasattr(self._owner.cls, name):
            # a callable class: `Model(w).map(inputs)` (typed loosely, like the methods)
            return cast("RemoteFunction[..., Any]", getattr(self._method("__call__"), name))
        return self._method(name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """A callable class's instance is called in a job: `Model(weights)(x)`."""
        return self._method("__call__")(*args, **kwargs)

    def __dir__(self) -> list[str]:
        cls = self._owner.cls
        return sorted(n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n, None)))

    def _method(self, name: str) -> RemoteFunction[..., Any]:
        from ._function import RemoteFunction  # _function imports this module for `remote`

        method = self._methods.get(name)
        if method is not None:
            return method
        cls = self._owner.cls
        if name == "__call__" and not _callable(cls):
            raise TypeError(f"{qualname(cls)} instances are not callable: call one of its methods")
        try:
            attribute = inspect.getattr_static(cls, name)
        except AttributeError:
            raise AttributeError(f"{qualname(cls)} has no method {name!r}") from None
        options = self._owner.settings
        if isinstance(attribute, RemoteFunction):  # a method with options of its own (`@remote(flavor=...)`)
            options = _own_options(attribute.settings, options)
            attribute = attribute.function
        if isinstance(attribute, functools.partialmethod):
            pass
        elif isinstance(attribute, (classmethod, property)) or not (
            callable(attribute) or isinstance(attribute, staticmethod)
        ):
            raise AttributeError(
                f"{qualname(cls)}.{name} is not a method: a remote instance lives in its jobs, and only its "
                "methods can be called from here"
            )
        plain = getattr(attribute, "__func__", attribute)
        if inspect.isgeneratorfunction(plain) or inspect.isasyncgenfunction(plain):
            raise OptionsError(
                f"{qualname(cls)}.{name} is a generator: a remote method must return its result (return a list)"
            )
        method = RemoteFunction(InstanceMethod(cls, self._args, self._kwargs, name, self._built), options)
        self._methods[name] = method
        return method

    def __getstate__(self) -> dict[str, Any]:
        return {"_owner": self._owner, "_args": self._args, "_kwargs": self._kwargs}  # no instance, no lock

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _methods={}, _built=Built())

    def __reduce_ex__(self, protocol: Any) -> str | tuple[Any, ...]:
        # Into a job (an argument, or a global of a function there): a plain instance, built there.
        return reduce_remote(self, (LocalInstance, (self._owner.cls, self._args, self._kwargs)))

    def __repr__(self) -> str:
        # Types, not values: a constructor's arguments may hold a key or a token.
        arguments = [*(type(a).__name__ for a in self._args), *(f"{k}=..." for k in self._kwargs)]
        return f"<remote {self._owner.__qualname__}({', '.join(arguments)}): built in each job>"
