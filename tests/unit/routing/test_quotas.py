"""Quota seeding on a real Redis: what the database knows is what Redis counts from."""

from __future__ import annotations

import time
from collections.abc import Sequence
from decimal import Decimal

import redis

from routing.plan import make_plan
from routing.quotas import Quotas
from routing.tokens import TokenEstimate
from schemas.jobs import RoutingOptions
from schemas.outcomes import Claimed, Outcome, OutcomeKind
from schemas.tenants import Budget, QuotaScope, ScopeHistory, TenantLimits
from tests.unit.routing.conftest import catalog, run

CAT = catalog("  a: {provider: openai, base_url: x, model: e, context_window: 1000,"
              " pricing: {input: '1', output: '1'}}")
PLAN = make_plan(CAT, "m", TokenEstimate(prompt=10, output=10), RoutingOptions())
ROLLING = Budget(amount=Decimal("1.00"), period="rolling", rolling_s=600)


def _row(limits: TenantLimits, seq: int = 0) -> Claimed:
    return Claimed(job_id="batch_q", seq=seq, custom_id="c", model="m", body="{}", attempts=1,
                   claim="w", tenant_id="t1", tenant_limits=limits)


async def _ok() -> Outcome:
    return Outcome(kind=OutcomeKind.SUCCEEDED, job_id="batch_q", seq=0, claim="w")


def test_a_rolling_budget_is_seeded_bucket_by_bucket_once(redis_url: str) -> None:
    asked: list[tuple[Sequence[float], float | None]] = []

    def history(scope: QuotaScope, edges: Sequence[float], since: float | None) -> ScopeHistory:
        asked.append((edges, since))
        spend = [Decimal(0)] * (len(edges) - 1)
        spend[0], spend[-1] = Decimal("0.60"), Decimal("0.45")  # oldest and newest buckets
        return ScopeHistory(spend=spend, calls=[])

    quotas = Quotas(redis_url, history=history)

    async def scenario() -> list[Outcome]:
        try:
            return [await quotas.guard(_row(TenantLimits(budget=ROLLING)), PLAN, _ok)
                    for _ in range(2)]
        finally:
            await quotas.aclose()

    outcomes = run(scenario())

    [(edges, since)] = asked  # seeded once: the second call found the marker
    now = time.time()
    assert since is None  # no rate limits: no calls asked for
    assert len(edges) in (61, 62) and edges[0] >= now - 600 - 10 and edges[-1] > now
    assert [o.error_code for o in outcomes] == ["budget_exceeded"] * 2
    assert "spent $1.05" in (outcomes[0].error_message or "")
    buckets = redis.Redis.from_url(redis_url).hgetall("batchyard:tenant:t1:spend:rolling")
    assert sorted(int(v) for v in buckets.values()) == [450_000_000, 600_000_000]


def test_seeded_calls_fill_the_rate_window(redis_url: str) -> None:
    now = time.time()

    def history(scope: QuotaScope, edges: Sequence[float], since: float | None) -> ScopeHistory:
        assert since is not None and abs(since - (now - 60)) < 5
        return ScopeHistory(spend=[], calls=[(now - 1, 10), (now - 2, 10), (now, 0)])

    quotas = Quotas(redis_url, history=history)
    limits = TenantLimits(rpm=4)

    async def scenario() -> list[Outcome]:
        try:
            return [await quotas.guard(_row(limits, seq), PLAN, _ok) for seq in range(3)]
        finally:
            await quotas.aclose()

    first, second, third = run(scenario())

    assert first.kind is OutcomeKind.SUCCEEDED  # 3 seeded + this one = 4
    assert second.kind is third.kind is OutcomeKind.DEFERRED
    assert second.error_message == "tenant 't1' is at its rpm limit"


def test_a_database_that_cannot_say_the_spend_admits_nothing(redis_url: str) -> None:
    import pytest

    from schemas.errors import RoutingStateError

    def history(scope: QuotaScope, edges: Sequence[float], since: float | None) -> ScopeHistory:
        raise ConnectionError("database down")

    quotas = Quotas(redis_url, history=history)
    called: list[int] = []

    async def call() -> Outcome:
        called.append(1)
        return await _ok()

    async def scenario() -> None:
        try:
            await quotas.guard(_row(TenantLimits(budget=ROLLING)), PLAN, call)
        finally:
            await quotas.aclose()

    with pytest.raises(RoutingStateError, match="spend of tenant 't1' could not be read"):
        run(scenario())
    assert called == []  # the pipeline defers the request: it waits for the database


def test_a_tenant_and_its_key_are_both_seeded_before_the_first_call(redis_url: str) -> None:
    seeded: list[str | None] = []

    def history(scope: QuotaScope, edges: Sequence[float], since: float | None) -> ScopeHistory:
        seeded.append(scope.key_id)
        return ScopeHistory(spend=[], calls=[])

    quotas = Quotas(redis_url, history=history)
    row = Claimed(job_id="batch_q", seq=0, custom_id="c", model="m", body="{}", attempts=1,
                  claim="w", tenant_id="t1", tenant_limits=TenantLimits(rpm=10),
                  key_id="bya_0000abcd", key_limits=TenantLimits(rpm=2))

    async def scenario() -> list[Outcome]:
        try:
            return [await quotas.guard(row, PLAN, _ok) for _ in range(3)]
        finally:
            await quotas.aclose()

    outcomes = run(scenario())

    assert seeded == [None, "bya_0000abcd"]  # both, on the first call, once each
    assert [o.kind for o in outcomes] == [OutcomeKind.SUCCEEDED, OutcomeKind.SUCCEEDED,
                                          OutcomeKind.DEFERRED]
    assert outcomes[2].error_message == "API key 'bya_0000abcd' is at its rpm limit"
