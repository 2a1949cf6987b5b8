"""One attempt of one request, as a plain async function: plan, admit, call, report, price.

No Celery and no database here: the engine feeds it claimed rows and hands its outcomes to the
writer, so it can be tested with a fake client. The decisions live in ``routing``; this module
only strings them together:

- the router admits the call to a deployment (shared limits and health, in Redis);
- a deployment-health failure (5xx, timeout, 429…) is tried again at once on another eligible
  deployment (then the next fallback group), up to ``routing.failovers`` times; a context-length
  rejection moves on to the next fallback group;
- what is left over becomes a deferral with backoff (an attempt used) or a final failure;
- no room anywhere (limits) or no healthy deployment (policy ``wait``) is a *throttled*
  deferral: it holds no worker slot and gives its attempt back.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from providers.client import UpstreamClient
from providers.registry import get_provider
from routing.health import Verdict
from routing.limits import Refusal
from routing.plan import Plan
from routing.price_book import price_at
from routing.pricing import cost_of
from routing.quotas import Quotas
from routing.retry import retry_delay
from routing.router import Router, Ticket
from routing.trail import Trail
from schemas.chat import ChatRequest
from schemas.errors import (
    ContextLengthError,
    GatewayError,
    RoutingStateError,
    UnavailableError,
    UpstreamError,
)
from schemas.outcomes import Claimed, Outcome, OutcomeKind
from schemas.settings import WorkerSettings

__all__ = ["Pipeline"]

log = logging.getLogger(__name__)

STATE_RETRY_S = (1.0, 5.0)
"""When Redis (limits, health) does not answer, wait a random time in this range."""
WAIT_JITTER = 0.05
"""Waits for health are spread by up to this share, so they do not all return at once."""


@dataclass(frozen=True)
class _Attempt:
    row: Claimed
    req: ChatRequest
    plan: Plan
    trail: Trail
    base: dict[str, Any]
    on_send: Callable[[], None] | None = None


@dataclass
class Pipeline:
    """Runs attempts against the upstreams the router admits."""

    router: Router
    client: UpstreamClient
    settings: WorkerSettings
    rng: random.Random = field(default_factory=random.Random)
    quotas: Quotas | None = None

    async def run(self, row: Claimed, *, on_send: Callable[[], None] | None = None) -> Outcome:
        """The outcome of one attempt; never raises. ``on_send`` is called each time a call
        is admitted and about to be sent upstream."""
        base: dict[str, Any] = {"job_id": row.job_id, "seq": row.seq, "claim": row.claim}
        trail = Trail.resume(row.route, row.model)
        try:
            req = ChatRequest.model_validate_json(row.body)
            plan = self.router.plan(req, row.routing)
        except (ValidationError, GatewayError) as exc:
            code = getattr(exc, "code", "invalid_request")
            return Outcome(kind=OutcomeKind.FAILED, error_code=code, error_message=str(exc),
                           route=trail.dumps(), **base)
        trail.planned(plan.skipped)
        attempt = _Attempt(row, req, plan, trail, base, on_send)
        try:
            if self.quotas is not None:  # the tenant's limits: reserve, call, settle
                return await self.quotas.guard(row, plan, lambda: self._attempt(attempt))
            return await self._attempt(attempt)
        except RoutingStateError as exc:
            delay = self.rng.uniform(*STATE_RETRY_S)
            return self._throttled(attempt, delay, exc.code, str(exc))
        except Exception as exc:  # a bug must not lose the request: fail it loudly
            log.exception("unexpected error running %s/%s", row.job_id, row.seq)
            return Outcome(kind=OutcomeKind.FAILED, error_code="internal_error",
                           error_message=f"{type(exc).__name__}: {exc}", route=trail.dumps(),
                           **base)

    async def _attempt(self, a: _Attempt) -> Outcome:
        avoid: set[str] = set()
        failed: tuple[Ticket, UpstreamError] | None = None
        got: Ticket | Refusal | None = None
        for _ in range(1 + self.router.policy.failovers):
            got = await self.router.acquire(a.plan, avoid)
            if not isinstance(got, Ticket):
                break
            result = await self._call(a, got)
            if isinstance(result, Outcome):
                return result
            failed = (got, result)
            if isinstance(result, ContextLengthError):
                avoid.update(d.name for d in a.plan.step_of(got.model).deployments)
            elif result.retryable:
                avoid.add(got.deployment.name)
            else:
                break
            got = None
        if failed is not None:
            wait = got.wait_s if isinstance(got, Refusal) else 0.0
            return self._failed_call(a, failed, wait)
        if isinstance(got, Refusal):
            return self._waiting(a, got)
        raise AssertionError("a plan always has an eligible deployment")

    async def _call(self, a: _Attempt, ticket: Ticket) -> Outcome | UpstreamError:
        """Call the admitted deployment; an Outcome on success, else the error to handle."""
        dep = ticket.deployment
        try:
            provider = get_provider(dep.provider)
            if a.on_send is not None:
                a.on_send()
            reply = await self.client.send(provider, a.req, dep)
        except UpstreamError as exc:
            self.router.release_soon(ticket, exc, tokens=a.plan.tokens.prompt)
            a.trail.call(a.row.attempts, ticket, status=exc.status, error=exc.code)
            return exc
        except BaseException:  # a bug or a cancellation: free the admission, then go on up
            await self.router.release(ticket, None, tokens=ticket.admission.tokens,
                                      verdict=Verdict.VOID)
            raise
        result = reply.result
        self.router.release_soon(ticket, None, latency_ms=reply.latency_ms,
                                 tokens=result.usage.total_tokens or ticket.admission.tokens)
        a.trail.call(a.row.attempts, ticket, status=result.status_code, ms=reply.latency_ms)
        return Outcome(
            kind=OutcomeKind.SUCCEEDED, status_code=result.status_code,
            upstream_request_id=result.request_id[:128],
            response=result.text if result.text is not None else json.dumps(result.body),
            usage=result.usage, cost=cost_of(result.usage, price_at(dep)),
            latency_ms=round(reply.latency_ms, 3), deployment=dep.name, provider=provider.name,
            route=a.trail.dumps(), **a.base,
        )

    def _failed_call(self, a: _Attempt, failed: tuple[Ticket, UpstreamError], wait_s: float
                     ) -> Outcome:
        """The attempt's last call failed: retry later (an attempt used) or give up."""
        ticket, exc = failed
        fields: dict[str, Any] = {
            "status_code": exc.status, "error_code": exc.code, "error_message": exc.describe(),
            "deployment": ticket.deployment.name, "provider": ticket.deployment.provider,
            "route": a.trail.dumps(), **a.base}
        if exc.retryable and a.row.attempts < self.settings.max_attempts:
            delay = retry_delay(a.row.attempts, base_s=self.settings.backoff_base_s,
                                max_s=self.settings.backoff_max_s, retry_after=exc.retry_after)
            return Outcome(kind=OutcomeKind.DEFERRED,
                           not_before=time.time() + max(delay, wait_s), **fields)
        if exc.retryable:
            fields["error_message"] = (
                f"gave up after {a.row.attempts} attempts; last error: {exc.describe()}")
        return Outcome(kind=OutcomeKind.FAILED, **fields)

    def _waiting(self, a: _Attempt, refusal: Refusal) -> Outcome:
        """No room (limits) or no healthy deployment: wait, or fail by policy."""
        tags = "".join(f" with {k}={v}" for k, v in a.plan.tags.items())
        if refusal.saturated:
            return self._throttled(a, refusal.wait_s, "waiting_for_capacity",
                                   f"every eligible deployment of {a.plan.model!r}{tags} is "
                                   f"at its limits: {refusal.describe()}")
        why = (f"every eligible deployment of {a.plan.model!r}{tags} (and its fallbacks) is "
               f"cooling down: {refusal.describe()}")
        if self.router.policy.when_unavailable == "fail":
            err = UnavailableError(f"{why}; the catalog's routing.when_unavailable is 'fail'")
            return Outcome(kind=OutcomeKind.FAILED, error_code=err.code, error_message=str(err),
                           route=a.trail.dumps(), **a.base)
        wait = refusal.wait_s * (1 + self.rng.uniform(0, WAIT_JITTER))
        return self._throttled(a, wait, "waiting_for_healthy_deployment", why)

    def _throttled(self, a: _Attempt, wait_s: float, code: str, message: str) -> Outcome:
        a.trail.waited(message)
        return Outcome(kind=OutcomeKind.DEFERRED, throttled=True,
                       not_before=time.time() + max(wait_s, 0.0), error_code=code,
                       error_message=message, route=a.trail.dumps(), **a.base)

    async def aclose(self) -> None:
        await self.router.aclose()
        if self.quotas is not None:
            await self.quotas.aclose()
