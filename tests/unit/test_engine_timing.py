"""The engine's timing without HTTP: how often a run is looked at, and how errors slow it down."""

from __future__ import annotations

import time

from hfremote._engine import _Run
from hfremote._hub import Hub


def run_aged(seconds: float, hub: Hub) -> _Run:
    now = time.monotonic()
    return _Run(hub, "me", "run", since=now - seconds, due=now)


def test_looks_are_quick_while_a_run_is_young_then_back_off_to_a_ceiling() -> None:
    hub = Hub("https://huggingface.co", None)  # polls 2 s apart at first on the Hub
    young, older, old = run_aged(0, hub), run_aged(10, hub), run_aged(10_000, hub)
    assert 2.0 <= young.interval() < 2.1
    assert older.interval() > young.interval()
    assert old.interval() == 20.0  # ten times the base, never more


def test_the_emulator_is_looked_at_more_often() -> None:
    assert run_aged(0, Hub("http://127.0.0.1:1", None, is_emulator=True)).interval() < 0.05


def test_unexpected_errors_in_a_row_slow_the_looks_down_up_to_a_bound() -> None:
    run = run_aged(10_000, Hub("https://huggingface.co", None))
    base = run.interval()
    run.errors = 1
    assert run.interval() == 2 * base
    run.errors = 50
    assert run.interval() == 32 * base  # 2**5 at most
