"""Money in the database: exact integer picodollars, Decimal in Python.

SQLite has no exact decimal type (NUMERIC columns store floats), so every cost is stored as a
whole number of 1e-12 USD. Catalog prices carry at most six decimals per million tokens, so
every per-request cost is an exact whole number of picodollars, and SQL SUM() is exact.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import BigInteger, Dialect
from sqlalchemy.types import TypeDecorator

__all__ = ["PICO", "Money", "from_pico", "to_pico"]

PICO = Decimal("1e-12")


def to_pico(amount: Decimal) -> int:
    """USD → picodollars (rounded half-even at the 12th decimal)."""
    return int((amount / PICO).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def from_pico(value: int | None) -> Decimal:
    """Picodollars → USD."""
    return (Decimal(int(value or 0)) * PICO).normalize() if value else Decimal(0)


class Money(TypeDecorator[Decimal]):
    """A USD amount column."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else to_pico(Decimal(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else from_pico(int(value))
