"""Deployment health: which failures count against a deployment, and its breaker's state.

The circuit breaker is shared by every worker through Redis (the state machine itself runs in
the ``SETTLE`` and ``ADMIT`` scripts of ``routing.lua``, so concurrent reports from many hosts
cannot race)::

    closed ──(N consecutive failures, or ≥ rate failing over a window)──▶ open
    open ──(cooldown_s passed)──▶ half-open: the next admission is the one probe
    half-open ──probe succeeds──▶ closed;  probe fails ──▶ open (a new cooldown)

Only deployment-health failures count (``Verdict.FAIL``): 5xx, overloaded, timeouts,
connection errors, malformed bodies — the retryable upstream errors. A 429 is not a broken
deployment but a busy one (``Verdict.THROTTLED``): it cools the deployment down for its
Retry-After (or ``throttle_cooldown_s``) without counting toward the breaker. Any other answer
(400, 401, content filter, context length) proves the deployment is up (``Verdict.NEUTRAL``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from schemas.catalog import RoutingPolicy
from schemas.errors import RateLimitedError, UpstreamError

__all__ = ["DeploymentState", "Verdict", "cooldown_after", "verdict_for"]


class Verdict(StrEnum):
    """What one call says about its deployment's health."""

    OK = "ok"
    FAIL = "fail"
    THROTTLED = "throttled"
    NEUTRAL = "neutral"
    VOID = "void"
    """No answer to judge (the call was cancelled, or failed on our side): only the admission
    is freed, and a probe's turn passes to the next call."""


def verdict_for(error: UpstreamError | None) -> Verdict:
    """Classify a call's outcome by the error class's ``retryable`` attribute alone."""
    if error is None:
        return Verdict.OK
    if isinstance(error, RateLimitedError):
        return Verdict.THROTTLED
    return Verdict.FAIL if error.retryable else Verdict.NEUTRAL


def cooldown_after(error: UpstreamError | None, policy: RoutingPolicy) -> float:
    """Seconds a 429 keeps its deployment aside: the upstream's Retry-After, else the policy's."""
    if error is not None and error.retry_after is not None:
        return max(error.retry_after, 0.0)
    return policy.throttle_cooldown_s


@dataclass(frozen=True)
class DeploymentState:
    """A snapshot of one deployment's shared state (times in ms of the Redis clock)."""

    now_ms: int
    in_flight: int
    requests_in_window: int
    tokens_in_window: int
    latency_ms: float | None
    open_until: int
    cool_until: int
    probe_until: int
    next_slot: int
    streak: int
    opened: int

    @property
    def breaker(self) -> str:
        """closed, open, half-open (a probe may go) or probing (the probe is out)."""
        if self.open_until == 0:
            return "closed"
        if self.open_until > self.now_ms:
            return "open"
        return "probing" if self.probe_until > self.now_ms else "half-open"

    @property
    def cooling_s(self) -> float:
        """Seconds left of a 429 cooldown (0 when none)."""
        return max(self.cool_until - self.now_ms, 0) / 1000

    @property
    def open_s(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        return max(self.open_until - self.now_ms, 0) / 1000
