"""A counting gate for upstream calls in flight: block (never spin) until slots free up.

Two refinements, both measured in bench/ (docs/PERFORMANCE.md):

- ``at_least``: a caller can wait until several slots are free and take them together. When the
  engine is full, slots free one by one; without it every feeder would claim rows one at a
  time, a database transaction per row at the moment the database is busiest.
- ``reserve``: a few slots only priority callers (realtime and high chunks) may take, so a
  realtime request never waits behind a full engine's bulk work for a slot.
"""

from __future__ import annotations

import threading

__all__ = ["Capacity", "default_reserve"]


def default_reserve(limit: int) -> int:
    """Slots kept for priority tiers: 1/16 of the limit, at most 64 (none below 16 slots)."""
    return min(limit // 16, 64)


class Capacity:
    """At most ``limit`` slots taken at once; ``take`` blocks on a condition variable."""

    def __init__(self, limit: int, reserve: int = 0) -> None:
        if not 0 <= reserve < limit:
            raise ValueError(f"reserve must be in [0, {limit}), got {reserve}")
        self.limit = limit
        self.reserve = reserve
        self._used = 0
        self._cond = threading.Condition()

    def take(self, n: int, timeout: float | None = None, *, at_least: int = 1,
             priority: bool = False) -> int:
        """Take up to ``n`` slots once ``at_least`` are free; return how many (0: timed out).

        Priority callers may use the reserved slots; others stop ``reserve`` short of the limit.
        """
        ceiling = self.limit if priority else self.limit - self.reserve
        want = max(1, min(at_least, n, ceiling))
        with self._cond:
            if not self._cond.wait_for(lambda: ceiling - self._used >= want, timeout):
                return 0
            got = min(n, ceiling - self._used)
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
