from __future__ import annotations

import pytest

from mock_upstream.stats import Stats, max_in_window


@pytest.mark.parametrize(
    ("times", "most"),
    [
        ([], 0),
        ([0.0], 1),
        ([0.0, 59.9], 2),
        ([0.0, 60.0], 1),
        ([0.0, 1.0, 2.0, 61.5, 62.0, 62.5, 63.0], 4),
    ],
)
def test_max_in_window(times: list[float], most: int) -> None:
    assert max_in_window(times, 60.0) == most


def test_arrivals_are_bounded_and_reset_keeps_in_flight() -> None:
    stats = Stats(max_arrivals=5)
    stats.enter()
    for _ in range(8):
        stats.arrive("openai", "m")
    assert stats.total == 8
    assert len(stats.arrivals["m"]) == 5
    stats.reset()
    assert (stats.total, stats.in_flight, stats.max_in_flight) == (0, 1, 1)
    stats.leave("200")
    assert stats.snapshot()["by_status"] == {"200": 1}
