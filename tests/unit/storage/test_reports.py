"""Reports over finished requests: grouping, time ranges, tenants and percentiles, on SQLite
and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, update

from schemas.keys import Tier
from storage import NewJob, create_job, make_engine
from storage.models import REQUESTS
from storage.reports import ReportFilter, deployment_stats, spend
from storage.tenants import create_tenant

DAY1 = datetime(2026, 11, 1, 23, 30, tzinfo=UTC)
DAY2 = DAY1 + timedelta(hours=1)  # 2026-11-02 00:30 UTC


@pytest.fixture
def engine(database_url: str) -> Engine:
    engine = make_engine(database_url)
    create_tenant(engine, "acme")
    create_tenant(engine, "globex")
    return engine


def _finished(engine: Engine, job_id: str, tenant: str, rows: list[dict[str, object]]) -> None:
    body = '{"model":"m","messages":[{"role":"user","content":"x"}]}'
    create_job(engine, NewJob(job_id, Tier.BULK, tenant_id=tenant),
               [(f"c{i}", str(r.get("model", "m")), body) for i, r in enumerate(rows)],
               batch=50, check=lambda conn: None)
    with engine.begin() as conn:
        for seq, values in enumerate(rows):
            values = {k: v for k, v in values.items() if k != "model"}
            conn.execute(update(REQUESTS).where(REQUESTS.c.job_id == job_id,
                                                REQUESTS.c.seq == seq).values(**values))


def _ok(ms: float, cost: str, when: datetime, dep: str = "d1") -> dict[str, object]:
    return {"state": "succeeded", "deployment": dep, "provider": "openai", "latency_ms": ms,
            "cost": Decimal(cost), "prompt_tokens": 10, "completion_tokens": 5,
            "finished_at": when}


def test_spend_is_grouped_by_day_and_scoped_by_tenant_and_time(engine: Engine) -> None:
    _finished(engine, "batch_a", "acme", [_ok(10, "0.000000000001", DAY1),
                                          _ok(20, "0.25", DAY2),
                                          {"state": "failed", "deployment": "d1",
                                           "provider": "openai", "finished_at": DAY2},
                                          {"state": "queued"}])
    _finished(engine, "batch_b", "globex", [_ok(30, "1.5", DAY2, dep="d2")])

    every = spend(engine, ReportFilter())
    acme = spend(engine, ReportFilter(tenant="acme"))
    late = spend(engine, ReportFilter(since=DAY2 - timedelta(minutes=1)))
    early = spend(engine, ReportFilter(until=DAY2 - timedelta(minutes=1)))

    assert sum(r.cost for r in every) == Decimal("1.750000000001")
    assert [(r.period, r.requests, r.succeeded, r.failed, r.cost) for r in acme] == [
        ("2026-11-01", 1, 1, 0, Decimal("0.000000000001")),
        ("2026-11-02", 2, 1, 1, Decimal("0.25"))]
    assert {r.tenant for r in late} == {"acme", "globex"}
    assert sum(r.cost for r in late) == Decimal("1.75")
    assert [(r.tenant, r.cost) for r in early] == [("acme", Decimal("0.000000000001"))]
    assert spend(engine, ReportFilter(tenant="nobody")) == []
    hourly = spend(engine, ReportFilter(tenant="globex"), "hour")
    assert [r.period for r in hourly] == ["2026-11-02 00:00"]


def test_latency_percentiles_and_error_rate_per_deployment(engine: Engine) -> None:
    rows = [_ok(float(ms), "0.01", DAY1) for ms in range(1, 101)]  # 1..100 ms
    rows += [{"state": "failed", "deployment": "d1", "provider": "openai",
              "finished_at": DAY1}] * 25
    _finished(engine, "batch_p", "acme", rows)

    [d1] = deployment_stats(engine, ReportFilter(tenant="acme"))

    assert (d1.p50_ms, d1.p95_ms, d1.p99_ms) == (50.0, 95.0, 99.0)
    assert d1.requests == 125 and d1.failed == 25 and d1.error_rate == 0.2
    assert deployment_stats(engine, ReportFilter(tenant="globex")) == []
