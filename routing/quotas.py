"""Tenant and API-key quotas and budgets, held in Redis for every worker at once (scripts:
quota_lua).

Around each attempt: **reserve** the estimated tokens and cost before the call, in every scope
that has limits (the job's tenant, and the key that submitted it when the key has limits of
its own) — refused when a scope is over its rpm, tpm or max_in_flight (the request is deferred
until the window frees, holding no worker slot) or out of budget — then **settle** with the
usage and cost the provider reported. Out of budget, a scope's policy decides: ``fail`` ends
every request that reaches a worker after that as ``budget_exceeded``; ``pause`` defers them
(the job shows as paused) until the next period starts (a rolling period: until its oldest
bucket ages out), or until ``tenants limits`` / ``keys limits`` raise the budget, which wakes
them at once (``storage.tenants.wake_paused``). One sleeper, the probe, looks again every
``recheck_s``; once a call of the scope is admitted again, the worker wakes the rest (a worker
may have read the old limits before the raise and paused a request after the wake). Calls
already in flight finish and are charged, which bounds the overrun by their reservations.

The estimate: ``routing.tokens`` for the prompt plus the request's output limit or the
catalog's ``default_completion_tokens``, priced at the dearest deployment of the plan at
today's price. Budgets count what was spent upstream, in nanodollars rounded up; the exact
accounting (picodollars, once per request) is the database's.

**Redis is not the memory.** When a scope's counters are missing (Redis lost its data, or a
new period began), the first reservation reads the scope's spend in the period and its calls
of the last window from the database (``history``) and seeds Redis with them before
admitting anything: a Redis restart neither resets a budget nor opens a rate window.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from routing.plan import Plan
from routing.price_book import price_at
from routing.pricing import cost_of
from routing.quota_lua import RESERVE, SEED, SETTLE
from schemas.chat import Usage
from schemas.errors import RoutingStateError
from schemas.keys import tenant_key
from schemas.outcomes import Claimed, Outcome, OutcomeKind
from schemas.tenants import BUDGET_PAUSED, Budget, QuotaScope, ScopeHistory, TenantLimits

__all__ = [
    "IN_FLIGHT_WAIT_MS",
    "History",
    "Quotas",
    "estimate_cost",
    "period_of",
    "period_start",
]

log = logging.getLogger(__name__)

IN_FLIGHT_WAIT_MS = 500
"""A scope at max_in_flight tries again after this long."""
LEASE_MS = 10 * 60 * 1000
"""A reservation whose worker died lapses after this long."""
CLAIM_EARLY_S = 1.0
"""A deferral may be claimed this much before it is due (``storage.requests.CLAIM_SKEW_S``)."""
BUCKETS = 60
"""A rolling budget period is counted in this many buckets."""
_NANO = Decimal("1e-9")
_UNREACHABLE = (RedisError, OSError, asyncio.TimeoutError)
_NO_LIMITS = TenantLimits()


History = Callable[[QuotaScope, Sequence[float], float | None], ScopeHistory]
"""``history(scope, spend edges, calls since)``: a blocking database read (run in a thread)."""


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


def period_start(budget: Budget, now: datetime) -> datetime:
    """When the calendar period containing ``now`` began (UTC); for a rolling period, the
    start of its window."""
    if budget.period == "daily":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if budget.period == "monthly":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return now - timedelta(seconds=budget.rolling_s or 86_400.0)


def period_end(budget: Budget, now: datetime) -> datetime | None:
    """When the calendar period containing ``now`` ends; None for a rolling period."""
    start = period_start(budget, now)
    if budget.period == "daily":
        return start + timedelta(days=1)
    if budget.period == "monthly":
        return (start + timedelta(days=32)).replace(day=1)
    return None


def _nano(amount: Decimal) -> int:
    return math.ceil(amount / _NANO)


def _bucket_ms(budget: Budget | None) -> int:
    rolling = period_of(budget, datetime.now(UTC))[2] if budget else 0
    return max(rolling // BUCKETS, 1)


class Quotas:
    """Reserve before the call, settle after; one per worker process (its asyncio loop)."""

    def __init__(self, redis_url: str, *, history: History | None = None,
                 waker: Callable[[QuotaScope], int] | None = None,
                 recheck_s: float = 60.0) -> None:
        self._url = redis_url
        self._history = history
        self._waker = waker
        self._recheck_s = recheck_s
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}

    @staticmethod
    def scopes(row: Claimed) -> list[QuotaScope]:
        """The scopes with limits that a call of ``row`` must fit."""
        found = []  # None (no limits stored) is the common case: no model is compared then
        if row.tenant_limits is not None and row.tenant_limits != _NO_LIMITS:
            found.append(QuotaScope(tenant_id=row.tenant_id, key_id=None,
                                    limits=row.tenant_limits))
        if row.key_limits is not None and row.key_limits != _NO_LIMITS:
            found.append(QuotaScope(tenant_id=row.tenant_id, key_id=row.key_id,
                                    limits=row.key_limits))
        return found

    async def guard(self, row: Claimed, plan: Plan, call: Callable[[], Awaitable[Outcome]]
                    ) -> Outcome:
        """Run ``call`` within the limits of the row's tenant and key: its outcome, or a
        deferral (over a rate, or paused by a budget) or ``budget_exceeded`` without calling."""
        scopes = self.scopes(row)
        if not scopes:
            return await call()
        member = secrets.token_hex(8)
        keys = [k for s in scopes for k in self._keys(s)]
        args = self._reserve_args(member, scopes, plan)
        verdict = await self._run("reserve", keys, args)
        for _ in scopes:  # a scope whose history Redis does not know: ask the database once
            if int(verdict[0]) != -2:
                break
            await self._seed(scopes[int(verdict[5]) - 1])
            verdict = await self._run("reserve", keys, args)
        admitted, wait_ms, reason, used, held, which = verdict
        if int(admitted) == 1:
            await self._wake_sleepers(scopes)
            return await self._settled(row, scopes, keys, (member, plan.reserve), call)
        base = {"job_id": row.job_id, "seq": row.seq, "claim": row.claim, "route": row.route}
        scope = scopes[int(which) - 1]
        if int(admitted) == -1:
            return await self._out_of_budget(scope, int(used), int(held), base)
        if int(admitted) == -2:
            raise RoutingStateError(f"the quotas of {scope.name} could not be seeded")
        return Outcome(kind=OutcomeKind.DEFERRED, throttled=True,
                       not_before=time.time() + int(wait_ms) / 1000,
                       error_code="tenant_rate_limited",
                       error_message=f"{scope.name} is at its {_text(reason)} limit", **base)

    async def _out_of_budget(self, scope: QuotaScope, used: int, held: int,
                             base: dict[str, Any]) -> Outcome:
        budget = scope.limits.budget
        assert budget is not None
        spent = (f"{scope.name} reached its {budget.period} budget of ${budget.amount} "
                 f"(spent ${used * _NANO}, ${held * _NANO} in flight)")
        if budget.on_exceeded == "fail":
            return Outcome(kind=OutcomeKind.FAILED, error_code="budget_exceeded",
                           error_message=spent, **base)
        now = datetime.now(UTC)
        ends = period_end(budget, now)
        if ends is None:  # rolling: spend may drop when the oldest bucket leaves the window
            again, when = now + timedelta(milliseconds=_bucket_ms(budget)), "as spend ages out"
        else:
            again, when = ends, f"at {ends.isoformat(timespec='seconds')}"
        # Sleepers are noted, and one of them (the probe) looks again every recheck_s: limits a
        # worker read before a raise may pause a request after the raise woke the others.
        client = self._client()
        until = max(int((again - now).total_seconds()) + 1, 1)
        await client.set(scope.key("paused"), "1", ex=until)
        me, probe = f"{base['job_id']}:{base['seq']}", scope.key("probe")
        hold = max(math.ceil(self._recheck_s * 2 + CLAIM_EARLY_S), 1)
        if (await client.set(probe, me, nx=True, ex=hold)
                or _text(await client.get(probe) or b"") == me):  # the probe, again
            await client.expire(probe, hold)
            again = min(again, now + timedelta(seconds=self._recheck_s))
        return Outcome(kind=OutcomeKind.DEFERRED, throttled=True,
                       not_before=again.timestamp(), error_code=BUDGET_PAUSED,
                       error_message=f"paused: {spent}; resumes when the budget is raised or "
                                     f"{when}",
                       **base)

    async def _wake_sleepers(self, scopes: list[QuotaScope]) -> None:
        """A call was admitted in a scope with the pause policy: if requests of the scope
        sleep (paused when its budget was spent), the budget has room again: wake them."""
        for scope in scopes:
            budget = scope.limits.budget
            if budget is None or budget.on_exceeded != "pause" or self._waker is None:
                continue
            if await self._client().delete(scope.key("paused")):
                try:
                    woken = await asyncio.to_thread(self._waker, scope)
                except Exception:  # the probe goes on: a later admission tries again
                    log.exception("waking the paused requests of %s failed", scope.name)
                    await self._client().set(scope.key("paused"), "1", ex=3600)
                else:
                    log.info("%s has budget again: %d paused requests woken", scope.name, woken)

    async def _settled(self, row: Claimed, scopes: list[QuotaScope], keys: list[str],
                       held: tuple[str, int], call: Callable[[], Awaitable[Outcome]]) -> Outcome:
        member, reserved = held
        outcome: Outcome | None = None
        try:
            outcome = await call()
        finally:
            called = outcome is not None and not outcome.throttled
            tokens = outcome.usage.total_tokens if outcome is not None and called else -1
            cost = outcome.cost if outcome is not None else Decimal(0)
            spent = await self._run("settle", keys,
                                    self._settle_args(member, reserved, tokens, cost, scopes))
            for scope, total in zip(scopes, spent, strict=True):
                await self._alert(scope, int(total))
        assert outcome is not None  # else call() raised and so did we
        return outcome

    def _keys(self, scope: QuotaScope) -> list[str]:
        budget = scope.limits.budget
        suffix = period_of(budget, datetime.now(UTC))[0] if budget else "none"
        return [scope.key("calls"), scope.key("held"), scope.key("spend", suffix),
                scope.key("seeded", suffix), scope.key("seeded", "calls")]

    def _reserve_args(self, member: str, scopes: list[QuotaScope], plan: Plan) -> list[Any]:
        args: list[Any] = ["", member, len(scopes), plan.reserve, _nano(estimate_cost(plan)),
                           LEASE_MS, IN_FLIGHT_WAIT_MS]
        for scope in scopes:
            limits, budget = scope.limits, scope.limits.budget
            rolling = period_of(budget, datetime.now(UTC))[2] if budget else 0
            args += [limits.rpm or 0, limits.tpm or 0, limits.max_in_flight or 0,
                     int(limits.limit_window_s * 1000), _nano(budget.amount) if budget else -1,
                     rolling, _bucket_ms(budget)]
        return args

    def _settle_args(self, member: str, reserved: int, tokens: int, cost: Decimal,
                     scopes: list[QuotaScope]) -> list[Any]:
        args: list[Any] = ["", member, len(scopes), reserved, tokens, _nano(cost)]
        for scope in scopes:
            budget = scope.limits.budget
            ttl, rolling = (period_of(budget, datetime.now(UTC))[1:] if budget
                            else (86_400, 0))
            args += [ttl, rolling, _bucket_ms(budget)]
        return args

    async def _seed(self, scope: QuotaScope) -> None:
        """Give Redis the scope's spend this period and its calls of the last window, as the
        database has them (once: the script ignores a second seeding)."""
        limits, budget = scope.limits, scope.limits.budget
        now = datetime.now(UTC)
        edges: list[float] = []
        bucket_ms = _bucket_ms(budget)
        if budget is not None and budget.period == "rolling":
            first = math.floor((now.timestamp() * 1000 - period_of(budget, now)[2])
                               / bucket_ms) + 1
            edges = [b * bucket_ms / 1000 for b in range(first, math.floor(
                now.timestamp() * 1000 / bucket_ms) + 2)]
        elif budget is not None:
            edges = [period_start(budget, now).timestamp(), now.timestamp() + 86_400]
        window_s = limits.limit_window_s if limits.rpm or limits.tpm else None
        since = now.timestamp() - window_s if window_s else None
        seen = ScopeHistory(spend=[], calls=[])
        if self._history is not None:
            try:
                seen = await asyncio.to_thread(self._history, scope, edges, since)
            except Exception as exc:  # the database is down: wait for it, admit nothing
                raise RoutingStateError(f"the spend of {scope.name} could not be read from the "
                                        f"database ({type(exc).__name__})") from exc
        spend: list[Any] = []
        for i, amount in enumerate(seen.spend):
            if amount > 0:
                bucket = (-1 if budget is None or budget.period != "rolling"
                          else round(edges[i] * 1000 / bucket_ms))
                spend += [bucket, _nano(amount)]
        calls: list[Any] = []
        for i, (at, tokens) in enumerate(seen.calls):
            calls += [f"seed{secrets.token_hex(4)}{i}|{tokens}", int(at * 1000)]
        _, ttl, rolling = period_of(budget, now) if budget else ("", 0, 0)
        marker_ttl = 0 if rolling else ttl
        window_ms = int(window_s * 1000) if window_s else 0
        done = await self._run("seed", self._keys(scope),
                               ["", ttl, marker_ttl, window_ms, len(spend) // 2,
                                len(calls) // 2, *spend, *calls])
        if int(done):
            log.info("%s: quotas seeded from the database (spent $%s this period, %d calls "
                     "in the last window)", scope.name, sum(seen.spend, Decimal(0)),
                     len(seen.calls))

    async def _alert(self, scope: QuotaScope, spent: int) -> None:
        """Once per period, when spend crosses the soft threshold: a ``budget.alert`` event
        on the tenant's alerts stream (and the log)."""
        budget = scope.limits.budget
        if budget is None or spent < _nano(budget.amount) * budget.alert_at:
            return
        client = self._client()
        key = scope.key("alert", period_of(budget, datetime.now(UTC))[0])
        if await client.set(key, "1", nx=True, ex=32 * 86_400):
            fields = {"type": "budget.alert", "tenant": scope.tenant_id,
                      "api_key": scope.key_id or "", "spent": str(spent * _NANO),
                      "budget": str(budget.amount), "period": budget.period}
            await client.xadd(tenant_key(scope.tenant_id, "alerts"),
                              fields,  # type: ignore[arg-type]
                              maxlen=1000)
            log.warning("%s spent $%s of its $%s %s budget", scope.name,
                        fields["spent"], budget.amount, budget.period)

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(self._url, socket_timeout=5.0,
                                                  socket_connect_timeout=5.0)
            self._scripts = {"reserve": self._redis.register_script(RESERVE),
                             "settle": self._redis.register_script(SETTLE),
                             "seed": self._redis.register_script(SEED)}
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
