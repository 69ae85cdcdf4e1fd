"""asyncio: await remote calls, gather them, read a map as an async iterator, cancel with a timeout.

    uv run examples/async_calls.py

With no Hugging Face token this runs on hfremote's embedded emulator of the Jobs platform; with
HF_TOKEN set, the same code runs on Hugging Face Jobs (a few cpu-basic jobs).
"""

from __future__ import annotations

import asyncio
import time

from hfremote import remote


@remote(flavor="cpu-basic", timeout="10m")
async def checksum(name: str, parts: int = 4) -> dict[str, str]:
    """An `async def` function runs on an event loop in its job: here it works on its parts concurrently."""
    import hashlib

    async def part(i: int) -> str:
        await asyncio.sleep(0.1)  # an I/O wait: a download, a call to an API
        return hashlib.sha256(f"{name}-{i}".encode()).hexdigest()[:4]

    digests = await asyncio.gather(*(part(i) for i in range(parts)))
    print(f"{name}: {parts} parts hashed concurrently")
    return {"name": name, "digest": "".join(digests)}


@remote(flavor="cpu-basic", timeout="10m")
def word_count(text: str) -> int:
    """A plain function has the same asyncio faces."""
    return len(text.split())


@remote(flavor="cpu-basic", timeout="10m", stream_logs=False)
async def slow() -> str:
    await asyncio.sleep(600)
    return "too late"


async def main() -> None:
    # One call: what `checksum("shard-0")` does (its output shown, its value returned), but the event
    # loop goes on meanwhile.
    print("one call:", await checksum.aio("shard-0"))

    # Several at once, one job each; the loop waits for all of them.
    calls = [checksum.aio(f"shard-{i}", parts=2) for i in range(1, 4)]
    print("gathered:", await asyncio.gather(*calls, word_count.aio("three words here")))

    # A map as an async iterator: 6 inputs, 3 per job, results in input order.
    texts = ["one", "two words", "three words here", "", "x y", "z"]
    counts = [count async for count in word_count.map.aio(texts, chunksize=3)]
    print("map:", counts)

    # Futures are awaitable: `submit.aio` creates the job off the loop, and the future has its id.
    future = await word_count.submit.aio("a future can be awaited")
    print(f"job {future.job_id}:", await future)

    # Cancelling the awaiting task cancels the job (unless detach=True): a timeout does it here.
    started = time.monotonic()
    try:
        await asyncio.wait_for(slow.aio(), timeout=5)
    except asyncio.TimeoutError:
        print(f"slow: gave up after {time.monotonic() - started:.0f}s; its job was cancelled")


if __name__ == "__main__":
    asyncio.run(main())
