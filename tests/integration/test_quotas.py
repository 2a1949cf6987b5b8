"""Tenant quotas across real workers: a rate spreads the work out; a budget stops it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from decimal import Decimal

import httpx
import pytest
import redis
from pydantic import SecretStr
from sqlalchemy import select

from producers import Producer
from schemas.jobs import JobStatus, JobView
from schemas.keys import tenant_key
from schemas.tenants import Budget, TenantLimits
from storage import make_engine
from storage.models import REQUESTS
from storage.tenants import create_key, create_tenant
from tests.helpers import ROOT, wait_for
from tests.stack import CATALOG, Stack


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_tenant_over_its_rate_is_spread_out_not_failed(stack: Stack) -> None:
    producer = stack.tenant_producer("t1", TenantLimits(rpm=60, limit_window_s=1.0))  # 60 a second
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
    producer = stack.tenant_producer("t1", TenantLimits(budget=Budget(amount=Decimal("0.50"),
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
    shown = subprocess.run([sys.executable, "-m", "batchyard", "tenants", "show", "t1"],
                           env=stack.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert f"spent ${final.cost:.6f} of $0.50 this daily period" in shown.stdout
    listed = subprocess.run([sys.executable, "-m", "batchyard", "tenants", "alerts", "t1",
                             "--json"], env=stack.env, cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    [told] = json.loads(listed.stdout)
    assert told["type"] == "budget.alert" and told["budget"] == "0.50"
    assert told["period"] == "daily" and told["api_key"] == ""
    assert Decimal("0.40") <= Decimal(told["spent"]) <= final.cost
    alerts = redis.Redis.from_url(redis_url).xrange(tenant_key("t1", "alerts"))
    assert len(alerts) == 1 and alerts[0][1][b"type"] == b"budget.alert"
    producer.close()


def _dear_catalog(stack: Stack) -> str:
    dear = CATALOG.replace('{{input: "0.15", output: "0.60", cached_input: "0.075"}}',
                           '{{input: "1000", output: "1000"}}')  # ~$0.01-0.05 a request
    path = stack.tmp / "dear.yaml"
    path.write_text(dear.format(url=stack.mock_url))
    return str(path)


PAUSED_BUDGET = Budget(amount=Decimal("0.20"), period="daily", on_exceeded="pause")


def _paused_job(stack: Stack) -> tuple[Producer, JobView]:
    """A 40-request job of tenant t1, whose $0.20 budget pauses it part way (one worker, a
    probe every second)."""
    producer = stack.tenant_producer("t1", TenantLimits(budget=PAUSED_BUDGET))
    stack.start_worker("--max-in-flight", "4", BATCHYARD_CONFIG=_dear_catalog(stack),
                       BATCHYARD_WORKER__BUDGET_RECHECK_S="1")
    return producer, producer.submit([f"question {i}" for i in range(40)], model="small")


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_pause_budget_holds_the_job_until_the_budget_is_raised(stack: Stack) -> None:
    from storage.tenants import set_limits

    producer, job = _paused_job(stack)

    held = wait_for(lambda: (v := producer.status(job.id)).paused and v, 60, "the pause")
    assert held.status is JobStatus.IN_PROGRESS and held.counts.get("failed", 0) == 0
    assert held.finished < 40 and "reached its daily budget of $0.20" in held.paused
    engine = make_engine(stack.settings.database_url)
    set_limits(engine, "t1", TenantLimits(budget=PAUSED_BUDGET.model_copy(
        update={"amount": Decimal("100")})))
    final = producer.wait(job.id, timeout=60)

    assert final.status is JobStatus.COMPLETED and final.counts.get("succeeded") == 40
    assert final.paused is None
    engine.dispose()
    producer.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_keys_own_budget_stops_that_key_only(stack: Stack) -> None:
    engine = make_engine(stack.settings.database_url)
    create_tenant(engine, "t1")
    capped = create_key(engine, "t1", "capped", TenantLimits(budget=Budget(
        amount=Decimal("0.25"), period="monthly")))
    free = create_key(engine, "t1", "free").key
    engine.dispose()
    producers = [Producer(stack.settings.model_copy(update={"api_key": SecretStr(k)}))
                 for k in (capped.key, free)]
    in_flight = 4
    stack.start_worker("--max-in-flight", str(in_flight), BATCHYARD_CONFIG=_dear_catalog(stack))
    jobs = [p.submit([f"question {i}" for i in range(60)], model="small") for p in producers]

    stopped, unbound = (p.wait(j.id, timeout=90) for p, j in zip(producers, jobs, strict=True))

    assert unbound.counts.get("succeeded") == 60  # the tenant has no budget; the other key
    assert 0 < stopped.counts.get("succeeded", 0) < 60
    assert stopped.counts.get("failed", 0) == 60 - stopped.counts.get("succeeded", 0)
    per_request = unbound.cost / 60 * 2  # requests differ by a few tokens; twice the mean
    assert Decimal("0.25") <= stopped.cost <= Decimal("0.25") + in_flight * per_request
    [line] = [r for r in producers[0].results(jobs[0].id) if r.error][:1]
    assert line.error is not None and f"API key '{capped.view.id}' reached its monthly " \
        "budget of $0.25" in line.error.message
    for p in producers:
        p.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_request_paused_after_the_raise_is_found_by_the_probe(stack: Stack) -> None:
    from sqlalchemy import update

    from storage.models import TENANTS

    producer, job = _paused_job(stack)
    wait_for(lambda: producer.status(job.id).paused, 60, "the pause")

    # The budget is raised without waking anyone, as when a worker read the old limits and
    # paused its request after the raise woke the others: all sleep until midnight but one.
    raised = TenantLimits(budget=PAUSED_BUDGET.model_copy(update={"amount": Decimal("100")}))
    engine = make_engine(stack.settings.database_url)
    with engine.begin() as conn:
        conn.execute(update(TENANTS).where(TENANTS.c.id == "t1")
                     .values(limits=raised.model_dump(mode="json", exclude_defaults=True)))
    final = producer.wait(job.id, timeout=60)

    assert final.status is JobStatus.COMPLETED and final.counts.get("succeeded") == 40
    engine.dispose()
    producer.close()
