"""The sliding-window request limit behind ``MockConfig.rate_limit_rpm``."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from mock_upstream.config import RATE_WINDOW_SECONDS
from mock_upstream.formats.base import RateInfo

__all__ = ["SlidingWindow"]


class SlidingWindow:
    """Admits at most ``limit`` requests per key in any ``window`` seconds.

    Only admitted requests take a slot, so a client that backs off gets through again once the
    oldest admitted request leaves the window.
    """

    def __init__(
        self,
        window: float = RATE_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window = window
        self._clock = clock
        self._admitted: dict[str, deque[float]] = {}

    def acquire(self, key: str, limit: int) -> RateInfo:
        """Take a slot for ``key`` if one is free; either way, say how the window stands."""
        now = self._clock()
        admitted = self._admitted.get(key)
        if admitted is None:
            admitted = self._admitted[key] = deque()
        horizon = now - self._window
        while admitted and admitted[0] <= horizon:
            admitted.popleft()
        if len(admitted) >= limit:
            # A slot frees when the oldest admitted requests beyond the limit have left.
            frees_at = admitted[len(admitted) - limit] + self._window
            return RateInfo(limit, 0, frees_at - now, allowed=False)
        admitted.append(now)
        return RateInfo(limit, limit - len(admitted), admitted[0] + self._window - now, True)

    def clear(self) -> None:
        self._admitted.clear()
