"""What a request costs: tokens × the deployment's prices, exact in Decimal."""

from __future__ import annotations

from decimal import Decimal

from schemas.catalog import Pricing
from schemas.chat import Usage

__all__ = ["cost_of"]

_PER = Decimal(1_000_000)


def cost_of(usage: Usage, pricing: Pricing) -> Decimal:
    """USD for ``usage`` at ``pricing`` (cached prompt tokens at the cached price, if any)."""
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    cached_price = pricing.input if pricing.cached_input is None else pricing.cached_input
    total = (
        Decimal(usage.prompt_tokens - cached) * pricing.input
        + Decimal(cached) * cached_price
        + Decimal(usage.completion_tokens) * pricing.output
    ) / _PER
    return total * pricing.batch_discount
