"""The router: a request's plan, then a deployment admitted against shared limits and health.

``plan`` is pure (catalog only); ``acquire`` walks the plan's model groups in order, asking the
limiter to admit the call to the first deployment of each group's strategy order that is
healthy and has room. A group at its limits makes the request wait there; a group that is
wholly unhealthy (or already failed this attempt) passes it to the next group of the chain.
``release`` reports how the call went, which moves the breaker, the latency average and the
tpm count; ``release_soon`` does the same without making the caller wait for Redis's answer
(the call's outcome does not depend on it), and ``aclose`` waits for those still on their way.

Without a limiter (the producer, unit tests) nothing is shared and nothing is limited: the
first deployment of the strategy's order is taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Set
from dataclasses import dataclass
from functools import partial
from typing import Any

from routing.health import Verdict, cooldown_after, verdict_for
from routing.limits import Admission, Limiter, Refusal
from routing.plan import Plan, make_plan
from routing.strategies import order
from routing.tokens import encoding_for_model, estimate_tokens
from schemas.catalog import Catalog, Deployment, RoutingPolicy
from schemas.chat import ChatRequest
from schemas.errors import UnknownModelError, UpstreamError
from schemas.jobs import RoutingOptions

__all__ = ["Router", "Ticket"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ticket:
    """An admitted call: the model group serving it and its admission."""

    model: str
    admission: Admission

    @property
    def deployment(self) -> Deployment:
        return self.admission.deployment


class Router:
    """Resolves model names, plans requests, admits and releases calls."""

    def __init__(self, catalog: Catalog, limiter: Limiter | None = None, *,
                 rng: random.Random | None = None) -> None:
        self.catalog = catalog
        self.limiter = limiter
        self._names = catalog.public_names()
        self._rng = rng or random.Random()
        self._releasing: set[asyncio.Future[Any]] = set()

    @property
    def policy(self) -> RoutingPolicy:
        return self.catalog.routing

    def resolve(self, model: str) -> str:
        """The model group a public name or alias belongs to."""
        try:
            return self._names[model]
        except KeyError:
            raise UnknownModelError(f"unknown model {model!r}") from None

    def plan(self, req: ChatRequest, options: RoutingOptions | None = None) -> Plan:
        """Where ``req`` may go: its chain of groups, filtered by tags and context window."""
        group = self.resolve(req.model)
        tokens = estimate_tokens(req, self._counted_as(req.model, group))
        return make_plan(self.catalog, group, tokens, options)

    def _counted_as(self, name: str, group: str) -> str:
        """The model whose tokenizer counts a request: the requested name when it is an
        OpenAI model, else (an alias such as "mini") the group's first deployment's model."""
        if encoding_for_model(name) is not None:
            return name
        return self.catalog.deployments[self.catalog.models[group].deployments[0]].model

    async def acquire(self, plan: Plan, avoid: Set[str] = frozenset(), *,
                      dry_run: bool = False) -> Ticket | Refusal | None:
        """Admit the call somewhere: a Ticket; a Refusal (wait); None if nothing is left
        (every eligible deployment is in ``avoid``). ``dry_run`` decides without admitting."""
        unhealthy: list[Refusal] = []
        for step in plan.steps:
            deps = [d for d in step.deployments if d.name not in avoid]
            if not deps:
                continue
            ordering = order(step.strategy, deps, self._rng)
            if self.limiter is None:
                return Ticket(step.model, Admission(ordering.deployments[0], "", 0, False))
            got = await self.limiter.admit(ordering, plan.reserve, dry_run=dry_run)
            if isinstance(got, Admission):
                return Ticket(step.model, got)
            if got.saturated:
                return got
            unhealthy.append(got)
        if not unhealthy:
            return None
        return Refusal(False, min(r.wait_s for r in unhealthy),
                       tuple(reason for r in unhealthy for reason in r.reasons))

    async def release(self, ticket: Ticket, error: UpstreamError | None, *, tokens: int,
                      latency_ms: float | None = None, verdict: Verdict | None = None) -> None:
        """Report how the call ended (``verdict`` overrides the one ``error`` implies). Never
        raises: the call's result matters more."""
        if self.limiter is None or not ticket.admission.member:
            return
        settled = self._settle(ticket, error, tokens, latency_ms, verdict)
        with contextlib.suppress(Exception):  # _reported logs it
            await settled
        self._reported(ticket, error, settled)

    def release_soon(self, ticket: Ticket, error: UpstreamError | None, *, tokens: int,
                     latency_ms: float | None = None) -> None:
        """``release`` without waiting for Redis's answer.

        The report is queued at once, so whatever this loop sends to Redis after it (the next
        request's admission) is applied after it, as with ``release``; only the answer is
        awaited in the background. Waiting for it kept every request a Redis round trip
        longer from its outcome being written and its slot freed (about a tenth of a second
        on a busy loop), and nothing the request does next depends on it. The answer is read
        by a done callback, not a task per call.
        """
        if self.limiter is None or not ticket.admission.member:
            return
        settled = self._settle(ticket, error, tokens, latency_ms, None)
        self._releasing.add(settled)
        settled.add_done_callback(partial(self._reported, ticket, error))

    def _settle(self, ticket: Ticket, error: UpstreamError | None, tokens: int,
                latency_ms: float | None, verdict: Verdict | None) -> asyncio.Future[Any]:
        assert self.limiter is not None
        return self.limiter.settle_soon(
            ticket.admission, verdict or verdict_for(error), tokens=tokens,
            latency_ms=latency_ms, cool_s=cooldown_after(error, self.policy))

    def _reported(self, ticket: Ticket, error: UpstreamError | None,
                  settled: asyncio.Future[Any]) -> None:
        """Log what the settle script answered: the breaker opened, or Redis did not take the
        report (the call's own outcome stands either way)."""
        self._releasing.discard(settled)
        if settled.cancelled():
            return
        exc = settled.exception()
        if exc is not None:
            log.warning("could not report a call to %s (%s: %s)", ticket.deployment.name,
                        type(exc).__name__, exc)
            return
        if not settled.result():
            return
        log.warning("circuit breaker of deployment %s opened (%s); cooling down for %gs",
                    ticket.deployment.name, error.describe() if error else "failures",
                    self.policy.breaker.cooldown_s)

    async def aclose(self) -> None:
        if self._releasing:  # reports on their way still reach Redis
            await asyncio.gather(*self._releasing, return_exceptions=True)
        if self.limiter is not None:
            await self.limiter.aclose()
