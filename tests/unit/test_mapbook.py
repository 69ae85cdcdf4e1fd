"""The map's bookkeeping without any HTTP: reading ahead, cutting chunks, retries, order of results."""

from __future__ import annotations

from hfremote._mapbook import MapBook
from hfremote._run import chunk_indexes, chunk_name, chunk_round


def calls(*indexes: int) -> list[tuple[int, bytes]]:
    return [(i, f"call {i}".encode()) for i in indexes]


def test_chunk_names_say_which_inputs_they_hold() -> None:
    assert chunk_name(0, 1) == "0-1" and chunk_indexes("0-1") == range(0, 1)
    assert chunk_name(120, 50, 2) == "120-50-r2" and chunk_indexes("120-50-r2") == range(120, 170)
    assert chunk_round("120-50-r2") == 2 and chunk_round("3-1") == 0
    assert chunk_indexes("0") is None and chunk_indexes("a-b") is None and chunk_indexes("1-2-x") is None


def test_chunks_hold_consecutive_inputs_up_to_chunksize() -> None:
    book = MapBook(chunksize=3)
    chunks = book.cut(calls(0, 1, 2, 3, 4, 7, 8, 10))
    assert [c.name for c in chunks] == ["0-3", "3-2", "7-2", "10-1"]
    assert [c.indexes for c in chunks] == [[0, 1, 2], [3, 4], [7, 8], [10]]


def test_a_resumed_run_never_reuses_the_name_of_a_chunk_that_had_a_job() -> None:
    book = MapBook(chunksize=2, taken={"4-2", "4-2-r1"})
    assert [c.name for c in book.cut(calls(4, 5, 6))] == ["4-2-r2", "6-1"]


def test_read_ahead_is_bounded_by_what_was_yielded() -> None:
    book = MapBook(chunksize=10, max_parallel=2)
    window = book.window
    assert book.to_read() == window * 10
    book.read(window * 10 * 2)  # nothing yielded yet: no more reading
    assert book.to_read() == 0
    book.next_yield = 10
    assert book.to_read() == window * 10
    book.exhausted = True
    assert book.to_read() == 0


def test_failed_inputs_are_retried_then_final() -> None:
    book = MapBook(chunksize=2, retries=1, return_exceptions=True)
    error = ValueError("x")
    packed = dict(calls(0, 1))
    assert book.record(packed, {0: (True, "a"), 1: (False, error)}) == []  # input 1 goes to retry
    (retry,) = book.take_retries(10)
    assert retry.indexes == [1] and retry.name == "1-1-r1"
    assert book.record(dict(retry.calls), {1: (False, error)}) == [(1, error)]  # final now
    assert list(book.ready()) == ["a", error]
    assert book.failed == 1 and book.finished == 2


def test_the_first_failure_in_input_order_ends_the_map_after_the_results_before_it() -> None:
    book = MapBook(chunksize=4)
    first, later = ValueError("first"), ValueError("later")
    book.record(dict(calls(0, 1, 2, 3)), {0: (True, 0), 1: (True, 1), 3: (False, later), 2: (False, first)})
    assert book.error is first
    assert list(book.ready()) == [0, 1]


def test_ordered_results_wait_for_their_turn_unordered_do_not() -> None:
    ordered, unordered = MapBook(), MapBook(ordered=False)
    for book in (ordered, unordered):
        book.read(3)
        book.record(dict(calls(2)), {2: (True, "c")})
    assert list(ordered.ready()) == [] and list(unordered.ready()) == ["c"]
    ordered.record(dict(calls(0, 1)), {0: (True, "a"), 1: (True, "b")})
    assert list(ordered.ready()) == ["a", "b", "c"]


def test_a_result_of_an_input_not_in_the_chunk_is_ignored() -> None:
    book = MapBook()
    book.record(dict(calls(0)), {0: (True, "a"), 5: (True, "stray")})
    assert book.done == {0: (True, "a")}


def test_over_only_when_nothing_is_left() -> None:
    book = MapBook()
    assert not book.over(running=0, queued=0)  # inputs may still come
    book.exhausted = True
    assert not book.over(running=1, queued=0)
    assert not book.over(running=0, queued=1)
    book.retry = calls(3)
    assert not book.over(running=0, queued=0)
    book.retry = []
    assert book.over(running=0, queued=0)
