from __future__ import annotations

from mock_upstream.ratelimit import SlidingWindow


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_window_admits_limit_then_refuses_until_the_oldest_leaves() -> None:
    clock = Clock()
    window = SlidingWindow(60.0, clock)
    assert [window.acquire("", 3).remaining for _ in range(3)] == [2, 1, 0]
    clock.now += 10
    refused = window.acquire("", 3)
    assert not refused.allowed
    assert refused.reset_seconds == 50.0
    clock.now += 49.9
    assert not window.acquire("", 3).allowed
    clock.now += 0.1
    assert window.acquire("", 3).allowed


def test_refused_requests_take_no_slot() -> None:
    clock = Clock()
    window = SlidingWindow(60.0, clock)
    window.acquire("", 1)
    for _ in range(100):
        clock.now += 0.5
        window.acquire("", 1)
    clock.now = 1060.0
    assert window.acquire("", 1).allowed


def test_keys_are_counted_apart_and_clear_forgets() -> None:
    window = SlidingWindow(60.0, Clock())
    assert window.acquire("a", 1).allowed
    assert window.acquire("b", 1).allowed
    assert not window.acquire("a", 1).allowed
    window.clear()
    assert window.acquire("a", 1).allowed


def test_a_lowered_limit_waits_for_enough_slots() -> None:
    clock = Clock()
    window = SlidingWindow(60.0, clock)
    for _ in range(3):
        window.acquire("", 3)
        clock.now += 1
    refused = window.acquire("", 1)
    # Three admitted at 1000, 1001, 1002: one slot of 1 frees when the third leaves.
    assert refused.reset_seconds == 1062.0 - clock.now
