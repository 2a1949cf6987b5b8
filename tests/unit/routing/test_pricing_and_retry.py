"""Prices in exact decimals; backoff with jitter that honours Retry-After."""

from __future__ import annotations

import random
from decimal import Decimal

from routing.pricing import cost_of
from routing.retry import retry_delay
from schemas.catalog import Pricing
from schemas.chat import Usage
from storage.money import from_pico, to_pico


def test_cost_is_exact_with_cached_tokens_and_batch_discount() -> None:
    pricing = Pricing(input=Decimal("0.15"), output=Decimal("0.60"),
                      cached_input=Decimal("0.075"), batch_discount=Decimal("0.5"))
    usage = Usage(prompt_tokens=1000, completion_tokens=200, cached_tokens=400)
    # (600 × 0.15 + 400 × 0.075 + 200 × 0.60) / 1e6 × 0.5
    assert cost_of(usage, pricing) == Decimal("0.00012")
    assert from_pico(to_pico(cost_of(usage, pricing))) == Decimal("0.00012")


def test_picodollars_round_trip_and_sum_exactly() -> None:
    amounts = [Decimal("0.000000150"), Decimal("0.0000375"), Decimal("1.23456789")]
    assert from_pico(sum(to_pico(a) for a in amounts)) == sum(amounts)


def test_retry_after_wins_over_backoff() -> None:
    assert retry_delay(1, base_s=1, max_s=60, retry_after=7.5) == 7.5


def test_backoff_grows_and_is_capped() -> None:
    rng = random.Random(1)
    delays = [retry_delay(a, base_s=1, max_s=8, rng=rng) for a in range(1, 10)]
    assert all(0.5 <= d <= 8 for d in delays)
    assert max(delays[5:]) > max(delays[:1])
