"""A counting gate for upstream calls in flight: block (never spin) until slots free up."""

from __future__ import annotations

import threading

__all__ = ["Capacity"]


class Capacity:
    """At most ``limit`` slots taken at once; ``take`` blocks on a condition variable."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._cond = threading.Condition()

    def take(self, n: int, timeout: float | None = None) -> int:
        """Take up to ``n`` slots (at least one), waiting until one is free; return how many."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._used < self.limit, timeout):
                return 0
            got = min(n, self.limit - self._used)
            self._used += got
            return got

    def give(self, n: int = 1) -> None:
        with self._cond:
            self._used -= n
            self._cond.notify_all()

    @property
    def used(self) -> int:
        return self._used

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no slot is taken; False when ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._used == 0, timeout)
