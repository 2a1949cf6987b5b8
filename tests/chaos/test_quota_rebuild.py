"""Quotas and rate windows after Redis loses every key: rebuilt from the database, so a restart
neither hands a tenant a fresh budget nor opens a tenant's or a deployment's window early."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from bench.chaos import RedisServer
from schemas.jobs import JobStatus
from schemas.keys import EPOCH_KEY
from schemas.tenants import Budget, TenantLimits
from tests.helpers import wait_for
from tests.stack import CATALOG, Stack, make_stack


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_redis_restart_does_not_give_a_tenant_a_fresh_budget(
        chaos_stack: Stack, private_redis: RedisServer) -> None:
    stack = chaos_stack
    dear = stack.tmp / "dear.yaml"
    dear.write_text(CATALOG.replace('{{input: "0.15", output: "0.60", cached_input: "0.075"}}',
                                    '{{input: "1000", output: "1000"}}').format(
                                        url=stack.mock_url))
    in_flight = 4
    stack.start_worker("--max-in-flight", str(in_flight), BATCHYARD_CONFIG=str(dear))
    client = redis.Redis.from_url(private_redis.url)
    wait_for(lambda: client.exists(EPOCH_KEY), 30, "the reconciler's first pass")
    probe = stack.producer.wait(stack.producer.submit(  # the default tenant: no budget
        [f"probe {i}" for i in range(4)], model="small").id, timeout=60)
    mean = probe.cost / 4  # requests differ by a few tokens
    budget = (mean * 24).quantize(Decimal("0.000001"))
    producer = stack.tenant_producer(
        "t1", TenantLimits(budget=Budget(amount=budget, period="daily")))
    first = producer.wait(producer.submit([f"warm-up {i}" for i in range(18)],
                                          model="small").id, timeout=60)
    assert first.counts.get("succeeded") == 18 and first.cost < budget

    private_redis.restart(down_s=0.5)  # the spend counted so far is gone from Redis
    second = producer.wait(producer.submit([f"question {i}" for i in range(100)],
                                           model="small").id, timeout=90)

    spent = first.cost + second.cost
    assert second.status is JobStatus.COMPLETED
    assert 0 < second.counts.get("failed", 0) < 100  # stopped by the budget, not the restart
    assert budget <= spent <= budget + in_flight * mean * 2  # a fresh budget: ~42 x mean
    producer.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_redis_restart_does_not_reopen_a_tenants_rate_window(
        chaos_stack: Stack, private_redis: RedisServer) -> None:
    stack = chaos_stack
    producer = stack.tenant_producer("t1", TenantLimits(rpm=30, limit_window_s=15.0))
    stack.start_worker()
    client = redis.Redis.from_url(private_redis.url)
    wait_for(lambda: client.exists(EPOCH_KEY), 30, "the reconciler's first pass")
    first = producer.wait(producer.submit([f"a{i}" for i in range(30)], model="small").id,
                          timeout=60)

    private_redis.restart(down_s=0.2)
    second = producer.wait(producer.submit([f"b{i}" for i in range(30)], model="small").id,
                           timeout=60)

    stats = httpx.get(f"{stack.mock_url}/_mock/stats", params={"window": 15}).json()
    assert first.counts.get("succeeded") == second.counts.get("succeeded") == 30
    assert stats["total"] == 60
    assert stats["max_in_window_all"] <= 32  # 30 a window (+2: admission vs arrival skew)
    producer.close()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_redis_restart_does_not_reopen_a_deployments_rate_window(
        tmp_path: Path, database_url: str, private_redis: RedisServer, mock: Any) -> None:
    limited = CATALOG.replace('    weight: 1\n    pricing: {{input: "0.15"',
                              '    weight: 1\n    rpm: 30\n    limit_window_s: 15\n'
                              '    pricing: {{input: "0.15"')
    stack = make_stack(tmp_path, database_url, private_redis.url, mock.url, limited)
    try:
        stack.start_worker()
        client = redis.Redis.from_url(private_redis.url)
        wait_for(lambda: client.exists(EPOCH_KEY), 30, "the reconciler's first pass")
        first = stack.producer.wait(stack.producer.submit(
            [f"a{i}" for i in range(30)], model="small").id, timeout=60)

        private_redis.restart(down_s=0.2)  # the deployment's window is gone from Redis
        second = stack.producer.wait(stack.producer.submit(
            [f"b{i}" for i in range(30)], model="small").id, timeout=90)

        stats = httpx.get(f"{mock.url}/_mock/stats", params={"window": 15}).json()
        assert first.counts.get("succeeded") == second.counts.get("succeeded") == 30
        assert stats["by_model"]["up-a"] == 60
        assert stats["max_in_window"]["up-a"] <= 30
    finally:
        stack.close()
