"""A priority chunk's handoff: its feeder is released once every row is as far as it waits for."""

from __future__ import annotations

import threading

from workers.engine import _Handoff


def test_the_feeder_is_released_once_every_row_is_told() -> None:
    handoff = _Handoff(3)
    first, second, third = handoff.tick(), handoff.tick(), handoff.tick()

    first()
    second()
    assert not handoff.done.is_set()
    third()
    assert handoff.done.is_set()


def test_a_row_told_twice_counts_once() -> None:
    # a failover sends a row's call again; the engine also tells it when the row ends
    handoff = _Handoff(2)
    first, second = handoff.tick(), handoff.tick()

    first()
    first()
    first()
    assert not handoff.done.is_set()
    second()
    assert handoff.done.is_set()


def test_rows_told_from_many_threads_at_once_count_exactly() -> None:
    # a lingering feeder's rows are told by the loop and by the writer's thread
    rows = 64
    handoff = _Handoff(rows, linger=True)
    ticks = [handoff.tick() for _ in range(rows)]
    start = threading.Barrier(8)

    def tell(part: list) -> None:  # type: ignore[type-arg]
        start.wait()
        for tick in part:
            tick()
            tick()

    threads = [threading.Thread(target=tell, args=(ticks[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert handoff.done.is_set() and handoff._left == 0
