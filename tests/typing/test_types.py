"""Checked by mypy (tests/unit/test_typing.py runs `mypy --strict` on it): the types @remote gives.

Nothing here runs a job: the checks sit in a function that is never called.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from hfremote import AsyncMapResults, MapResults, RemoteClass, RemoteFunction, RemoteFuture, RemoteInstance, remote

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


class EmbedderModel:
    def __init__(self, name: str) -> None:
        self.name = name

    def embed(self, text: str) -> list[float]:
        return [float(len(text))]


# mypy ignores what a class decorator returns (python/mypy#3135): `@remote class X` stays `type[X]` for it,
# so remote classes are typed through an assignment (pyright reads the decorator as well).
Embedder = remote(flavor="cpu-basic")(EmbedderModel)
Bare = remote(EmbedderModel)


def _never_called_classes() -> None:
    # A remote class's instance is a handle whose methods are remote functions (loosely typed: Any).
    assert_type(Embedder, RemoteClass[EmbedderModel])
    assert_type(Bare, RemoteClass[EmbedderModel])
    handle: RemoteInstance[EmbedderModel] = Embedder("bge-small")
    method: RemoteFunction[..., Any] = handle.embed
    for vector in handle.embed.map(["a", "b"], chunksize=256):
        del vector
    handle.embed.map(["a"], chunksize="many")  # type: ignore[arg-type]
    del method


@remote(flavor="cpu-basic")
async def fetch(url: str) -> bytes:
    return url.encode()


@remote
async def bare_async(n: int) -> int:
    return n


class Crawler:
    @remote(timeout="1h")
    async def crawl(self, depth: int) -> list[str]:
        return [str(depth)]


async def _never_called_async() -> None:
    # An `async def` function: calls as jobs give what its coroutine returns, `local` gives the coroutine.
    exact: RemoteFunction[[str], bytes, Coroutine[Any, Any, bytes]] = fetch
    as_plain: RemoteFunction[[str], bytes] = fetch  # type: ignore[assignment]
    del exact, as_plain
    assert_type(fetch("u"), bytes)
    assert_type(bare_async(1), int)
    assert_type(fetch.submit("u"), RemoteFuture[bytes])
    assert_type(fetch.submit("u").result(), bytes)
    assert_type(await fetch.local("u"), bytes)
    plain: Callable[[str], Coroutine[Any, Any, bytes]] = fetch.function
    del plain

    # The asyncio faces, of async and plain functions alike
    assert_type(await fetch.aio("u"), bytes)
    assert_type(await bare.aio(1), str)
    assert_type(await fetch.submit("u"), bytes)  # a RemoteFuture is awaitable
    assert_type(await fetch.submit.aio("u"), RemoteFuture[bytes])
    assert_type(fetch.map(["a"]), MapResults[bytes])
    assert_type(fetch.map.aio(["a"], chunksize=2), AsyncMapResults[bytes])
    async for item in fetch.map.aio(["a"]):
        assert_type(item, bytes)
    async for values in several.starmap.aio([(1, "b")]):
        assert_type(values, list[str])
    assert_type(await asyncio.gather(fetch.aio("a"), bare.aio(1)), tuple[bytes, str])
    assert_type(await fetch.options(flavor="cpu-basic").aio("u"), bytes)
    await fetch.aio(1)  # type: ignore[arg-type]
    await fetch.submit.aio(1)  # type: ignore[arg-type]
    fetch.map.aio(["a"], chunksize="2")  # type: ignore[arg-type]

    # methods bind as plain ones do
    crawler = Crawler()
    assert_type(await crawler.crawl.aio(2), list[str])
    assert_type(crawler.crawl(2), list[str])
    async for pages in crawler.crawl.map.aio([1, 2]):
        assert_type(pages, list[str])
    await crawler.crawl.aio("2")  # type: ignore[arg-type]


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
