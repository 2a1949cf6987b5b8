"""A priority chunk's handoff: its feeder is released once every row's call is sent."""

from __future__ import annotations

from workers.engine import _Handoff


def test_the_feeder_is_released_once_every_row_is_sent() -> None:
    handoff = _Handoff(3)
    first, second, third = handoff.sent(), handoff.sent(), handoff.sent()

    first()
    second()
    assert not handoff.done.is_set()
    third()
    assert handoff.done.is_set()


def test_a_row_told_twice_counts_once() -> None:
    # a failover sends a row's call again; the engine also tells it when the row ends
    handoff = _Handoff(2)
    first, second = handoff.sent(), handoff.sent()

    first()
    first()
    first()
    assert not handoff.done.is_set()
    second()
    assert handoff.done.is_set()
