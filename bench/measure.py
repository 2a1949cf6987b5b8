"""Small helpers shared by the scenarios: quantiles and database timestamps."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["epoch", "percentile"]


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def epoch(value: datetime) -> float:
    """A database timestamp (SQLite returns naive UTC) as epoch seconds."""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
