"""Model catalog, deployment selection, pricing and retry policy. Knows no wire format."""

from __future__ import annotations

from routing.catalog import load_catalog, parse_catalog
from routing.pricing import cost_of
from routing.retry import retry_delay
from routing.router import Router

__all__ = ["Router", "cost_of", "load_catalog", "parse_catalog", "retry_delay"]
