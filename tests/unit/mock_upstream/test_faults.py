from __future__ import annotations

import random
from collections import Counter

from mock_upstream.config import MockConfig
from mock_upstream.directives import Directive
from mock_upstream.faults import draw_fault, draw_latency


def test_no_rates_no_faults_and_no_draws() -> None:
    rng = random.Random(1)
    assert all(draw_fault(MockConfig(), rng) is None for _ in range(100))
    assert rng.random() == random.Random(1).random()


def test_each_rate_draws_its_fault() -> None:
    rng = random.Random(1)
    assert draw_fault(MockConfig(timeout_rate=1), rng) == Directive(timeout=True)
    assert draw_fault(MockConfig(reset_rate=1), rng) == Directive(reset=True)
    assert draw_fault(MockConfig(error_rate=1), rng) == Directive(status=500)
    assert draw_fault(MockConfig(overload_rate=1), rng) == Directive(overloaded=True)
    assert draw_fault(MockConfig(malformed_rate=1), rng) == Directive(malformed=True)
    assert draw_fault(MockConfig(error_body_rate=1), rng) == Directive(error_body=True)
    assert draw_fault(MockConfig(throttle_rate=1), rng) == Directive(status=429)


def test_rates_are_shares_of_requests() -> None:
    config = MockConfig(error_rate=0.2, reset_rate=0.1)
    rng = random.Random(42)
    drawn = Counter(draw_fault(config, rng) for _ in range(20_000))
    assert 0.18 < drawn[Directive(status=500)] / 20_000 < 0.22
    assert 0.08 < drawn[Directive(reset=True)] / 20_000 < 0.12
    assert 0.66 < drawn[None] / 20_000 < 0.74


def test_latency_with_jitter_stays_in_range() -> None:
    config = MockConfig(latency_ms=100, jitter_ms=50)
    rng = random.Random(3)
    delays = [draw_latency(config, rng) for _ in range(1000)]
    assert all(0.05 <= delay <= 0.15 for delay in delays)
    assert len(set(delays)) > 900
    assert draw_latency(MockConfig(latency_ms=10, jitter_ms=100), rng) >= 0
    assert draw_latency(MockConfig(), rng) == 0
