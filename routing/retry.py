"""When to try a failed request again: exponential backoff, full jitter, Retry-After first."""

from __future__ import annotations

import random

__all__ = ["retry_delay"]


def retry_delay(attempt: int, *, base_s: float, max_s: float, retry_after: float | None = None,
                rng: random.Random | None = None) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1).

    An upstream's Retry-After is honoured as a floor; otherwise the delay is drawn uniformly
    from [base/2, base·2^(attempt-1)] capped at ``max_s`` ("full jitter", so a burst of
    failures does not come back as a burst).
    """
    if retry_after is not None:
        return min(max(retry_after, 0.0), max_s * 10)
    ceiling = min(max_s, base_s * (2 ** max(attempt - 1, 0)))
    draw = (rng or random).uniform(base_s / 2, max(ceiling, base_s / 2))
    return float(draw)
