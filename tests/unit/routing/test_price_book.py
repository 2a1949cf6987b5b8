"""Dated prices: the price in force at a request's finish time applies."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from routing.catalog import parse_catalog
from routing.price_book import price_at
from schemas.errors import ConfigError

YAML = """\
deployments:
  d:
    provider: openai
    base_url: http://x/v1
    model: m
    pricing: {{input: "1.00", output: "2.00"}}
    price_history:
{history}
models:
  m: {{deployments: [d]}}
"""
HISTORY = """\
      - {effective_from: 2026-12-01, input: "0.50", output: "1.00", batch_discount: "0.5"}
      - {effective_from: "2027-01-01T12:00:00Z", input: "0.25", output: "0.75"}
"""


def test_the_period_in_force_at_the_instant_applies() -> None:
    dep = parse_catalog(YAML.format(history=HISTORY), "c.yaml").deployments["d"]

    def at(*args: int) -> tuple[Decimal, Decimal]:
        p = price_at(dep, datetime(*args, tzinfo=UTC))  # type: ignore[misc]
        return p.input, p.batch_discount

    assert at(2026, 11, 30, 23, 59) == (Decimal("1.00"), Decimal(1))
    assert at(2026, 12, 1) == (Decimal("0.50"), Decimal("0.5"))
    assert at(2027, 1, 1, 11, 59) == (Decimal("0.50"), Decimal("0.5"))
    assert at(2027, 1, 1, 12) == (Decimal("0.25"), Decimal(1))
    assert price_at(dep) is price_at(dep, datetime.now(UTC))  # default: now


def test_no_history_means_the_plain_price() -> None:
    dep = parse_catalog(YAML.format(history="      []"), "c.yaml").deployments["d"]
    assert price_at(dep, datetime(2000, 1, 1, tzinfo=UTC)) is dep.pricing


def test_periods_out_of_order_are_rejected_with_the_key() -> None:
    backwards = "\n".join(reversed(HISTORY.rstrip().splitlines())) + "\n"
    with pytest.raises(ConfigError, match="price_history"):
        parse_catalog(YAML.format(history=backwards), "c.yaml")
