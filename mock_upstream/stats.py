"""What the mock upstream has seen: counters and arrival times that tests and benchmarks read.

Only LLM calls count, never ``/_mock/*``. Arrival times are wall-clock (``time.time()``) and
bounded per model, so a test can check that a client kept to "N requests in any 60 s".
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

from mock_upstream.config import RATE_WINDOW_SECONDS

__all__ = ["MAX_ARRIVALS", "Stats", "max_in_window"]

MAX_ARRIVALS = 200_000
"""Arrival times kept per model (and over all models); older ones are dropped."""


def max_in_window(arrivals: Iterable[float], window: float = RATE_WINDOW_SECONDS) -> int:
    """The most arrivals in any half-open ``window`` seconds, for time-ordered ``arrivals``."""
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    times = list(arrivals)
    best = start = 0
    for end, arrived in enumerate(times):
        while arrived - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


class Stats:
    """Counters of LLM calls: by path kind, model and outcome, plus concurrency."""

    def __init__(self, max_arrivals: int = MAX_ARRIVALS) -> None:
        self._max_arrivals = max_arrivals
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Forget everything but the requests in flight now."""
        self.total = 0
        self.by_kind: Counter[str] = Counter()
        self.by_model: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.arrivals: dict[str, deque[float]] = {}
        self.all_arrivals: deque[float] = deque(maxlen=self._max_arrivals)
        self.max_in_flight = self.in_flight

    def enter(self) -> None:
        """A call started."""
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight

    def arrive(self, kind: str, model: str) -> None:
        """A call was read: its path kind (openai, azure, ...) and model are known."""
        now = time.time()
        self.total += 1
        self.by_kind[kind] += 1
        self.by_model[model] += 1
        arrivals = self.arrivals.get(model)
        if arrivals is None:
            arrivals = self.arrivals[model] = deque(maxlen=self._max_arrivals)
        arrivals.append(now)
        self.all_arrivals.append(now)

    def leave(self, outcome: str) -> None:
        """A call ended: its HTTP status, or "reset", "cancelled" (client gone) or "error"."""
        self.in_flight -= 1
        self.by_status[outcome] += 1

    def snapshot(
        self, *, window: float = RATE_WINDOW_SECONDS, arrivals: bool = False
    ) -> dict[str, Any]:
        """A JSON-ready view; ``arrivals`` adds every kept arrival time per model."""
        view: dict[str, Any] = {
            "total": self.total,
            "by_kind": dict(self.by_kind),
            "by_model": dict(self.by_model),
            "by_status": dict(self.by_status),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "window_seconds": window,
            "max_in_window": {
                model: max_in_window(times, window) for model, times in self.arrivals.items()
            },
            "max_in_window_all": max_in_window(self.all_arrivals, window),
        }
        if arrivals:
            view["arrivals"] = {model: list(times) for model, times in self.arrivals.items()}
        return view
