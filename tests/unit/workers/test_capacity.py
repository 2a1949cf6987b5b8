"""The engine's gate on calls in flight: grouped takes and the slots reserved for priority."""

from __future__ import annotations

import threading

import pytest

from workers.capacity import Capacity, default_reserve


def test_ordinary_callers_stop_short_of_the_reserve_and_priority_callers_do_not() -> None:
    gate = Capacity(10, reserve=2)

    assert gate.take(100) == 8
    assert gate.take(1, timeout=0.01) == 0
    assert gate.take(5, priority=True) == 2
    assert gate.used == 10


def test_a_grouped_take_waits_until_enough_slots_are_free() -> None:
    gate = Capacity(8)
    assert gate.take(8) == 8
    got: list[int] = []
    taker = threading.Thread(target=lambda: got.append(gate.take(8, timeout=5, at_least=3)))
    taker.start()

    gate.give(1)
    gate.give(1)
    assert gate.take(3, timeout=0.01, at_least=3) == 0  # two free: not enough for anyone
    gate.give(1)
    taker.join(5)

    assert got == [3]


def test_a_take_never_waits_for_more_than_it_asked_for() -> None:
    gate = Capacity(8)
    gate.take(7)

    assert gate.take(1, timeout=0.01, at_least=16) == 1


@pytest.mark.parametrize(("limit", "reserve"), [(1, 0), (15, 0), (16, 1), (512, 32),
                                                (10_000, 64)])
def test_the_default_reserve_is_a_sixteenth_capped(limit: int, reserve: int) -> None:
    assert default_reserve(limit) == reserve
    Capacity(limit, default_reserve(limit))  # always a valid gate
