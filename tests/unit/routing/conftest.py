"""Helpers for routing tests: catalogs from YAML text, a limiter on the test Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from routing.catalog import parse_catalog
from routing.limits import Limiter
from schemas.catalog import Catalog

T = TypeVar("T")

T0 = 1_700_000_000_000
"""A fixed "now" in ms: the scripts take the caller's clock, so tests control time."""


def run(coro: Coroutine[Any, Any, T], *closing: Limiter) -> T:
    """Run a scenario on a fresh loop, then close the limiters it used on that loop."""

    async def main() -> T:
        try:
            return await coro
        finally:
            for limiter in closing:
                await limiter.aclose()

    return asyncio.run(main())


def catalog(deployments: str, models: str = "  m: {deployments: [a]}",
            routing: str = "") -> Catalog:
    text = f"deployments:\n{deployments}\nmodels:\n{models}\n{routing}"
    return parse_catalog(text, "test.yaml")


@pytest.fixture
def make_limiter(redis_url: str) -> Callable[[Catalog], Limiter]:
    """``make_limiter(catalog)``: a limiter on the flushed test database."""
    return lambda cat: Limiter(redis_url, cat.routing, call_timeout_s=10)
