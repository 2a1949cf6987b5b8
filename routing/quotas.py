"""Tenant quotas and budgets, held in Redis for every worker at once (scripts: quota_lua).

Around each attempt: **reserve** the estimated tokens and cost before the call (refused when
the tenant is over its rpm, tpm or max_in_flight — the request is deferred until the window
frees, holding no worker slot — or out of budget), then **settle** with the usage and cost the
provider reported. A tenant out of budget gets ``budget_exceeded`` on every request that
reaches a worker after that; calls already in flight finish and are charged, which bounds
the overrun by their reservations.

The estimate: ``routing.tokens`` (chars/4; tiktoken is not required) for the prompt plus the
request's output limit or the catalog's ``default_completion_tokens``, priced at the dearest
deployment of the plan at today's price. Budgets count what was spent upstream, in
nanodollars rounded up; the exact accounting (picodollars, once per request) is the
database's. A Redis restart forgets the period's spend: see the README.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from routing.plan import Plan
from routing.price_book import price_at
from routing.pricing import cost_of
from routing.quota_lua import RESERVE, SETTLE
from schemas.chat import Usage
from schemas.errors import RoutingStateError
from schemas.keys import tenant_key
from schemas.outcomes import Claimed, Outcome, OutcomeKind
from schemas.tenants import Budget, TenantLimits

__all__ = ["IN_FLIGHT_WAIT_MS", "Quotas", "estimate_cost", "period_of"]

log = logging.getLogger(__name__)

IN_FLIGHT_WAIT_MS = 500
"""A tenant at max_in_flight tries again after this long."""
LEASE_MS = 10 * 60 * 1000
"""A reservation whose worker died lapses after this long."""
_NANO = Decimal("1e-9")
_UNREACHABLE = (RedisError, OSError, asyncio.TimeoutError)


def estimate_cost(plan: Plan) -> Decimal:
    """The most the call may cost: the reserved tokens at the dearest eligible deployment."""
    usage = Usage(prompt_tokens=plan.tokens.prompt,
                  completion_tokens=max(plan.reserve - plan.tokens.prompt, 0))
    deps = [d for step in plan.steps for d in step.deployments]
    return max((cost_of(usage, price_at(d)) for d in deps), default=Decimal(0))


def period_of(budget: Budget, now: datetime) -> tuple[str, int, int]:
    """(key suffix, ttl s, rolling ms) of the budget period containing ``now``."""
    if budget.period == "daily":
        return now.strftime("%Y-%m-%d"), 2 * 86_400, 0
    if budget.period == "monthly":
        return now.strftime("%Y-%m"), 32 * 86_400, 0
    rolling_s = budget.rolling_s or 86_400.0
    return "rolling", math.ceil(rolling_s * 2), int(rolling_s * 1000)


def _nano(amount: Decimal) -> int:
    return math.ceil(amount / _NANO)


class Quotas:
    """Reserve before the call, settle after; one per worker process (its asyncio loop)."""

    def __init__(self, redis_url: str) -> None:
        self._url = redis_url
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}

    async def guard(self, row: Claimed, plan: Plan, call: Callable[[], Awaitable[Outcome]]
                    ) -> Outcome:
        """Run ``call`` within the tenant's limits: its outcome, or a deferral (over rate) or
        ``budget_exceeded`` failure without calling."""
        limits = row.tenant_limits
        if limits is None or limits == TenantLimits():
            return await call()
        member = secrets.token_hex(8)
        keys = self._keys(row.tenant_id, limits)
        admitted, wait_ms, reason, used, held = await self._run(
            "reserve", keys[:3], self._reserve_args(member, limits, plan))
        if int(admitted) == 1:
            return await self._settled(row, limits, keys, (member, plan.reserve), call)
        base = {"job_id": row.job_id, "seq": row.seq, "claim": row.claim, "route": row.route}
        why = _text(reason)
        if int(admitted) == -1:
            assert limits.budget is not None
            return Outcome(kind=OutcomeKind.FAILED, error_code="budget_exceeded",
                           error_message=(f"tenant {row.tenant_id!r} reached its "
                                          f"{limits.budget.period} budget of "
                                          f"${limits.budget.amount} (spent ${int(used) * _NANO}"
                                          f", ${int(held) * _NANO} in flight)"), **base)
        return Outcome(kind=OutcomeKind.DEFERRED, throttled=True,
                       not_before=time.time() + int(wait_ms) / 1000,
                       error_code="tenant_rate_limited",
                       error_message=f"tenant {row.tenant_id!r} is at its {why} limit", **base)

    async def _settled(self, row: Claimed, limits: TenantLimits, keys: list[str],
                       held: tuple[str, int], call: Callable[[], Awaitable[Outcome]]) -> Outcome:
        member, reserved = held
        outcome: Outcome | None = None
        try:
            outcome = await call()
        finally:
            called = outcome is not None and not outcome.throttled
            tokens = outcome.usage.total_tokens if outcome is not None and called else -1
            cost = outcome.cost if outcome is not None else Decimal(0)
            spent = await self._run("settle", keys[:3],
                                    self._settle_args(member, reserved, tokens, cost, limits))
            await self._alert(row.tenant_id, limits, keys[3], int(spent))
        assert outcome is not None  # else call() raised and so did we
        return outcome

    def _keys(self, tenant: str, limits: TenantLimits) -> list[str]:
        suffix = period_of(limits.budget, datetime.now(UTC))[0] if limits.budget else "none"
        return [tenant_key(tenant, "calls"), tenant_key(tenant, "held"),
                tenant_key(tenant, "spend", suffix), tenant_key(tenant, "alert", suffix)]

    def _reserve_args(self, member: str, limits: TenantLimits, plan: Plan) -> list[Any]:
        budget = limits.budget
        rolling = period_of(budget, datetime.now(UTC))[2] if budget else 0
        return ["", member, limits.rpm or 0, limits.tpm or 0, limits.max_in_flight or 0,
                int(limits.limit_window_s * 1000), plan.reserve, _nano(estimate_cost(plan)),
                _nano(budget.amount) if budget else -1, LEASE_MS, rolling,
                max(rolling // 60, 1), IN_FLIGHT_WAIT_MS]

    def _settle_args(self, member: str, reserved: int, tokens: int, cost: Decimal,
                     limits: TenantLimits) -> list[Any]:
        ttl, rolling = (period_of(limits.budget, datetime.now(UTC))[1:] if limits.budget
                        else (86_400, 0))
        return ["", member, reserved, tokens, _nano(cost), ttl, rolling, max(rolling // 60, 1)]

    async def _alert(self, tenant: str, limits: TenantLimits, key: str, spent: int) -> None:
        """Once per period, when spend crosses the soft threshold: a ``budget.alert`` event
        on the tenant's alerts stream (and the log)."""
        budget = limits.budget
        if budget is None or spent < _nano(budget.amount) * budget.alert_at:
            return
        client = self._client()
        if await client.set(key, "1", nx=True, ex=32 * 86_400):
            fields = {"type": "budget.alert", "tenant": tenant, "spent": str(spent * _NANO),
                      "budget": str(budget.amount), "period": budget.period}
            await client.xadd(tenant_key(tenant, "alerts"), fields,  # type: ignore[arg-type]
                              maxlen=1000)
            log.warning("tenant %s spent $%s of its $%s %s budget", tenant,
                        fields["spent"], budget.amount, budget.period)

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(self._url, socket_timeout=5.0,
                                                  socket_connect_timeout=5.0)
            self._scripts = {"reserve": self._redis.register_script(RESERVE),
                             "settle": self._redis.register_script(SETTLE)}
        return self._redis

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        self._client()
        try:
            return await self._scripts[name](keys=keys, args=args)
        except _UNREACHABLE as exc:
            raise RoutingStateError(
                f"the tenant quotas in Redis do not answer ({type(exc).__name__}: {exc})"
            ) from exc

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
