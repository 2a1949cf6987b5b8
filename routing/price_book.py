"""Which price applies when: a deployment's ``price_history`` resolved at an instant.

A request is priced at the moment its call returned: the last ``price_history`` period whose
``effective_from`` is at or before that moment, else the deployment's ``pricing`` (the price
before any dated change). Costs are stored per request when they are recorded, so editing
the catalog to add a future price never rewrites history, and a report over an old range adds
up the old prices.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import UTC, datetime

from schemas.catalog import Deployment, Pricing

__all__ = ["price_at"]


def price_at(deployment: Deployment, when: datetime | None = None) -> Pricing:
    """The deployment's prices in force at ``when`` (default: now)."""
    history = deployment.price_history
    if not history:
        return deployment.pricing
    moment = datetime.now(UTC) if when is None else when
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    i = bisect_right([p.effective_from for p in history], moment)
    return deployment.pricing if i == 0 else history[i - 1]
