"""Tenant quotas across real workers: a rate spreads the work out; a budget stops it."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
import pytest
import redis
from pydantic import SecretStr
from sqlalchemy import select

from producers import Producer
from schemas.jobs import JobStatus
from schemas.keys import tenant_key
from schemas.tenants import Budget, TenantLimits
from storage import make_engine
from storage.models import REQUESTS
from storage.tenants import create_key, create_tenant
from tests.stack import CATALOG, Stack


def _tenant(stack: Stack, limits: TenantLimits) -> Producer:
    engine = make_engine(stack.settings.database_url)
    create_tenant(engine, "t1", limits=limits)
    key = create_key(engine, "t1").key
    engine.dispose()
    return Producer(stack.settings.model_copy(update={"api_key": SecretStr(key)}))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_tenant_over_its_rate_is_spread_out_not_failed(stack: Stack) -> None:
    producer = _tenant(stack, TenantLimits(rpm=60, limit_window_s=1.0))  # 60 per second
    for _ in range(2):
        stack.start_worker()
    started = time.monotonic()
    job = producer.submit([f"q{i}" for i in range(300)], model="small")

    final = producer.wait(job.id, timeout=120)

    wall = time.monotonic() - started
    stats = httpx.get(f"{stack.mock_url}/_mock/stats", params={"window": 1}).json()
    assert final.status is JobStatus.COMPLETED and final.counts.get("succeeded") == 300
    assert stats["total"] == 300
    assert stats["max_in_window_all"] <= 62  # 60 per window (+2: admission vs arrival skew)
    assert wall >= 4.0  # 300 at 60 a window: five windows, the first starting at once
    producer.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_budget_stops_the_tenant_with_an_overrun_bounded_by_what_was_in_flight(
        stack: Stack, redis_url: str) -> None:
    dear = CATALOG.replace('{{input: "0.15", output: "0.60", cached_input: "0.075"}}',
                           '{{input: "1000", output: "1000"}}')  # ~$0.01-0.05 a request
    path = stack.tmp / "dear.yaml"
    path.write_text(dear.format(url=stack.mock_url))
    producer = _tenant(stack, TenantLimits(budget=Budget(amount=Decimal("0.50"),
                                                         period="daily", alert_at=0.8)))
    in_flight = 8
    stack.start_worker("--max-in-flight", str(in_flight), BATCHYARD_CONFIG=str(path))
    job = producer.submit([f"question {i}" for i in range(150)], model="small")

    final = producer.wait(job.id, timeout=120)

    engine = make_engine(stack.settings.database_url)
    with engine.connect() as conn:
        rows = conn.execute(select(REQUESTS).where(REQUESTS.c.job_id == job.id)).all()
    engine.dispose()
    stopped = [r for r in rows if r.error_code == "budget_exceeded"]
    charged = [r for r in rows if r.state == "succeeded"]
    assert final.status is JobStatus.COMPLETED
    assert stopped and charged and len(stopped) + len(charged) == 150
    assert final.cost == sum(r.cost for r in rows) >= Decimal("0.50")
    assert final.cost - Decimal("0.50") <= in_flight * max(r.cost for r in charged)
    assert "reached its daily budget of $0.50" in (stopped[0].error_message or "")
    alerts = redis.Redis.from_url(redis_url).xrange(tenant_key("t1", "alerts"))
    assert len(alerts) == 1 and alerts[0][1][b"type"] == b"budget.alert"
    producer.close()
