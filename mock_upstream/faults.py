"""The random part of the mock: which fault a request gets and how long it waits."""

from __future__ import annotations

import random

from mock_upstream.config import MockConfig
from mock_upstream.directives import Directive

__all__ = ["draw_fault", "draw_latency"]

_FAULTS = (
    Directive(timeout=True),
    Directive(reset=True),
    Directive(status=500),
    Directive(overloaded=True),
    Directive(malformed=True),
    Directive(error_body=True),
    Directive(status=429),
)
"""One per rate of ``MockConfig.fault_rates()``, in the same order."""


def draw_fault(config: MockConfig, rng: random.Random) -> Directive | None:
    """The fault for one request, or None to answer normally: one draw against the rates."""
    rates = config.fault_rates()
    if not any(rates):
        return None
    point = rng.random()
    for rate, fault in zip(rates, _FAULTS, strict=True):
        if point < rate:
            return fault
        point -= rate
    return None


def draw_latency(config: MockConfig, rng: random.Random) -> float:
    """Seconds to wait: ``latency_ms`` give or take up to ``jitter_ms``, never negative."""
    latency_ms = config.latency_ms
    if config.jitter_ms:
        latency_ms += rng.uniform(-config.jitter_ms, config.jitter_ms)
    return max(0.0, latency_ms) / 1000.0
