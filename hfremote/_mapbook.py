"""A map's bookkeeping, without I/O: which inputs to read next, how they are cut into chunks, which
failed inputs to run again, and in what order the results come out.

The driver (`_map.MapRun`) reads inputs, uploads chunks, creates jobs and collects their outcomes; it
asks this object what to do at each step and tells it what happened, so the rules live in one place
and are tested without any HTTP (`tests/unit/test_mapbook.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ._run import chunk_name

Call = tuple[int, Any]  # (input index, its packed (args, kwargs); None where this process never packed it)


@dataclass
class Chunk:
    name: str
    calls: list[Call]

    @property
    def indexes(self) -> list[int]:
        return [index for index, _ in self.calls]


class MapBook:
    """The state of one map: read, launched, to retry, finished, yielded."""

    def __init__(
        self,
        chunksize: int = 1,
        max_parallel: int = 16,
        ordered: bool = True,
        return_exceptions: bool = False,
        retries: int = 0,
        taken: set[str] | None = None,
    ) -> None:
        self.chunksize, self.max_parallel, self.ordered = chunksize, max_parallel, ordered
        self.return_exceptions, self.retries = return_exceptions, retries
        # Chunks uploaded ahead of their jobs: enough to fill every slot, about 4096 inputs at most beyond that.
        self.window = max(max_parallel, min(2 * max_parallel, -(-4096 // chunksize)), 1)
        self.next_index = 0  # the index the next input read gets
        self.exhausted = False
        self.retry: list[Call] = []
        self.tries: dict[int, int] = {}
        self.done: dict[int, tuple[bool, Any]] = {}  # finished, not yet yielded
        self.next_yield = 0  # ordered: the index yielded next; unordered: how many were yielded
        self.error: BaseException | None = None  # the failure that ends the map (without return_exceptions)
        self.failed = self.finished = 0
        self.taken = set(taken or ())  # names of the chunks that have had a job (a resumed run's)

    # -- reading and cutting ---------------------------------------------------------------------
    def to_read(self) -> int:
        """How many more inputs to read now: results may not run too far ahead of the one awaited next
        (ordered), so memory stays flat."""
        if self.exhausted or self.next_index - self.next_yield >= self.window * self.chunksize * 2:
            return 0
        return self.window * self.chunksize

    def read(self, count: int) -> range:
        """`count` inputs were read: their indexes."""
        first, self.next_index = self.next_index, self.next_index + count
        return range(first, self.next_index)

    def cut(self, calls: list[Call], retry: int = 0) -> list[Chunk]:
        """Chunks of at most `chunksize` inputs of consecutive indexes (a chunk's name says which)."""
        chunks: list[Chunk] = []
        for index, call in calls:
            last = chunks[-1] if chunks else None
            if last is not None and len(last.calls) < self.chunksize and last.calls[-1][0] == index - 1:
                last.calls.append((index, call))
            else:
                chunks.append(Chunk("", [(index, call)]))
        for chunk in chunks:
            chunk.name = self._name(chunk.calls[0][0], len(chunk.calls), retry)
        return chunks

    def _name(self, first: int, count: int, retry: int) -> str:
        name = chunk_name(first, count, retry)
        while name in self.taken:  # a resumed run may have used it (a chunk uploaded, never run)
            retry += 1
            name = chunk_name(first, count, retry)
        self.taken.add(name)
        return name

    def take_retries(self, limit: int) -> list[Chunk]:
        """Up to `limit` chunks of failed inputs to run again (they go whatever the read-ahead is, or a
        failed input awaited next would stall the map)."""
        if not self.retry or limit <= 0:
            return []
        self.retry.sort()
        chunks = self.cut(self.retry, retry=max(self.tries.get(i, 1) for i, _ in self.retry))
        taken = chunks[:limit]
        left = {i for chunk in chunks[limit:] for i in chunk.indexes}
        self.retry = [call for call in self.retry if call[0] in left]
        return taken

    # -- outcomes --------------------------------------------------------------------------------
    def record(self, calls: dict[int, Any], outcomes: dict[int, tuple[bool, Any]]) -> list[tuple[int, Any]]:
        """A chunk's outcomes (index -> (ok, value or error)); the failures that are final, to report."""
        final_failures: list[tuple[int, Any]] = []
        failures: dict[int, BaseException] = {}
        for index, (ok, value) in sorted(outcomes.items()):
            if index not in calls:
                continue
            if not ok and self.tries.get(index, 0) < self.retries and calls[index] is not None:
                self.tries[index] = self.tries.get(index, 0) + 1
                self.retry.append((index, calls[index]))
                continue
            self.tries.pop(index, None)
            self.finished += 1
            if not ok:
                self.failed += 1
                final_failures.append((index, value))
                if not self.return_exceptions:
                    failures.setdefault(index, value)
                    continue
            self.done[index] = (ok, value)
        if failures and self.error is None:
            self.error = failures[min(failures)]
        return final_failures

    def ready(self) -> Iterator[Any]:
        """The values that may be yielded now (failures only get here with return_exceptions)."""
        if self.ordered:
            while self.next_yield in self.done:
                yield self.done.pop(self.next_yield)[1]
                self.next_yield += 1
        else:
            while self.done:
                self.next_yield += 1  # unordered: a count of the values yielded (what to_read subtracts)
                yield self.done.pop(next(iter(self.done)))[1]

    def over(self, running: int, queued: int) -> bool:
        """Whether nothing is left to read, launch, run again or wait for."""
        return self.exhausted and not running and not queued and not self.retry
