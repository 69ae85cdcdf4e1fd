"""Checked by mypy (tests/unit/test_typing.py runs `mypy --strict` on it): the types @remote gives.

Nothing here runs a job: the checks sit in a function that is never called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from hfremote import RemoteFunction, RemoteFuture, remote

if TYPE_CHECKING:  # typing.assert_type is 3.11+, and the project supports 3.10
    from typing_extensions import assert_type


@remote
def bare(x: int) -> str:
    return str(x)


@remote(flavor="cpu-basic", timeout="5m")
def configured(x: int) -> str:
    return str(x)


@remote(flavor="cpu-basic")
def several(a: int, b: str = "", *, c: float = 0.0) -> list[str]:
    return [str(a), b, str(c)]


def _never_called() -> None:
    # mypy keeps parameter names in a ParamSpec (`[Arg(int, 'x')]`), so `assert_type(bare, RemoteFunction[[int], str])`
    # cannot match; assignments check the type both ways instead, and the `type: ignore`s must be needed
    # (strict mode warns about unused ones).
    exact: RemoteFunction[[int], str] = bare
    exact = bare.options(flavor="cpu-basic")
    exact = configured
    exact = configured.options(flavor="cpu-basic", timeout=60)
    wrong_arg: RemoteFunction[[str], str] = bare  # type: ignore[assignment]
    wrong_result: RemoteFunction[[int], int] = configured  # type: ignore[assignment]
    wrong_arity: RemoteFunction[[int, int], str] = bare.options(flavor="cpu-basic")  # type: ignore[assignment]
    del exact, wrong_arg, wrong_result, wrong_arity

    assert_type(bare.submit(1), RemoteFuture[str])
    assert_type(bare(1), str)
    assert_type(bare.local(1), str)
    assert_type(bare.submit(1).result(), str)
    assert_type(bare.options(flavor="cpu-basic").submit(1), RemoteFuture[str])
    assert_type(bare.options(flavor="cpu-basic")(1), str)
    plain: Callable[[int], str] = bare.function
    del plain

    assert_type(configured.submit(1), RemoteFuture[str])
    assert_type(configured(1), str)
    assert_type(configured.local(1), str)
    assert_type(configured.options(flavor="cpu-basic").submit(1), RemoteFuture[str])

    assert_type(several(1, "b", c=2.0), list[str])
    assert_type(several.submit(1, c=2.0), RemoteFuture[list[str]])
    several.submit(1, c="2")  # type: ignore[arg-type]
    several.submit(1, "b", 2.0)  # type: ignore[call-arg]
    configured.local()  # type: ignore[call-arg]


class Trainer:
    @remote(timeout="1h")
    def fit(self, steps: int) -> float:
        return float(steps)


def _never_called_methods() -> None:
    # `@remote` on a method binds like a method: the instance is not a parameter of the bound function.
    trainer = Trainer()
    bound: RemoteFunction[[int], float] = trainer.fit
    unbound: RemoteFunction[[Trainer, int], float] = Trainer.fit
    value: float = trainer.fit(3)
    future: RemoteFuture[float] = trainer.fit.submit(3)
    trainer.fit("3")  # type: ignore[arg-type]
    trainer.fit(trainer, 3)  # type: ignore[arg-type, call-arg]
    print(bound, unbound, value, future)


def _plain(x: int, y: str = "") -> float:
    return float(x)


def _never_called_executor() -> None:
    # hfremote.Executor's futures are RemoteFutures of the function's result; map yields the results.
    from collections.abc import Iterator

    from hfremote import Executor

    with Executor(flavor="cpu-basic", max_workers=4) as ex:
        assert_type(ex.submit(_plain, 1), RemoteFuture[float])
        assert_type(ex.submit(_plain, 1, y="a").result(), float)
        assert_type(ex.submit(bare, 1), RemoteFuture[str])
        assert_type(ex.map(_plain, [1, 2], chunksize=2), Iterator[float])
        ex.submit(_plain, "1")  # type: ignore[arg-type]
        ex.submit(_plain, 1, z=2)  # type: ignore[call-arg]
    ex.shutdown(wait=False, cancel_futures=True)
