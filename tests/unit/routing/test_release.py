"""Reporting a call's end without waiting: the report is queued at once, its answer read later."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from routing.limits import Admission, Limiter
from routing.router import Router, Ticket
from schemas.chat import ChatRequest
from schemas.errors import ServerError
from tests.unit.routing.conftest import catalog, run

CAT = catalog("  a: {provider: openai, base_url: x, model: a}",
              routing="routing: {breaker: {consecutive_failures: 1, cooldown_s: 10}}")
REQ = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])


def test_a_report_that_opens_the_breaker_is_logged_and_applied(
        make_limiter: Any, caplog: pytest.LogCaptureFixture) -> None:
    limiter = make_limiter(CAT)
    router = Router(CAT, limiter)

    async def scenario() -> str:
        ticket = await router.acquire(router.plan(REQ))
        assert isinstance(ticket, Ticket)
        router.release_soon(ticket, ServerError("boom"), tokens=1)
        await router.aclose()  # waits for the reports on their way
        return (await limiter.peek([CAT.deployments["a"]]))["a"].breaker

    with caplog.at_level(logging.WARNING, logger="routing.router"):
        breaker = run(scenario(), limiter)

    assert breaker == "open"
    assert "circuit breaker of deployment a opened (upstream: boom)" in caplog.text


def test_a_report_redis_does_not_take_is_logged_and_never_raises(
        caplog: pytest.LogCaptureFixture) -> None:
    limiter = Limiter("redis://127.0.0.1:1/0", CAT.routing, call_timeout_s=10)  # nothing there
    router = Router(CAT, limiter)
    ticket = Ticket("m", Admission(CAT.deployments["a"], "member-1", 1, False))

    async def scenario() -> None:
        router.release_soon(ticket, None, tokens=1, latency_ms=5.0)
        await router.aclose()

    with caplog.at_level(logging.WARNING, logger="routing.router"):
        run(scenario())

    assert "could not report a call to a (ConnectionError" in caplog.text
