"""Aggregate queries over requests: spend, tokens and counts; latency and errors per deployment.

Every figure is computed by the database over finished requests (``finished_at`` in the
range), so a report and the job totals add up the same integer picodollars: report totals
equal the sum of request costs equal the sum of job costs, to the last picodollar.

Percentiles are nearest-rank (the value at rank ceil(p·n)), read one row at a time with
``ORDER BY latency_ms LIMIT 1 OFFSET k``: the same SQL on SQLite (which has no
``percentile_cont``) and PostgreSQL, and no latency list is ever held in memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import BigInteger, Engine, case, func, select, type_coerce

from schemas.jobs import RequestState
from storage.models import JOBS, REQUESTS
from storage.money import from_pico

__all__ = [
    "PERCENTILES",
    "DeploymentStats",
    "ModelUsage",
    "ReportFilter",
    "SpendRow",
    "deployment_stats",
    "spend",
    "usage_by_model",
]

_T = REQUESTS
_J = JOBS
PERCENTILES = (50, 95, 99)
Bucket = Literal["day", "hour"]
_FORMATS = {"day": ("YYYY-MM-DD", 10), "hour": ("YYYY-MM-DD HH24:00", 13)}


@dataclass(frozen=True)
class ModelUsage:
    model: str
    succeeded: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal


def usage_by_model(engine: Engine, job_ids: Sequence[str]) -> list[ModelUsage]:
    """Requests done and failed, tokens and cost per model, over the given jobs."""
    ok = func.sum(case((_T.c.state == RequestState.SUCCEEDED.value, 1), else_=0))
    bad = func.sum(case((_T.c.state == RequestState.FAILED.value, 1), else_=0))
    stmt = (
        select(_T.c.model, ok, bad, func.sum(_T.c.prompt_tokens),
               func.sum(_T.c.completion_tokens), func.sum(type_coerce(_T.c.cost, BigInteger)))
        .where(_T.c.job_id.in_(list(job_ids)))
        .group_by(_T.c.model)
        .order_by(_T.c.model)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [ModelUsage(model=r[0], succeeded=int(r[1] or 0), failed=int(r[2] or 0),
                       prompt_tokens=int(r[3] or 0), completion_tokens=int(r[4] or 0),
                       cost=from_pico(int(r[5] or 0))) for r in rows]


@dataclass(frozen=True)
class ReportFilter:
    """Which finished requests a report covers: ``since`` ≤ finished_at < ``until``."""

    since: datetime | None = None
    until: datetime | None = None
    tenant: str | None = None
    """One tenant's requests; None: every tenant (the operator's view)."""
    job_id: str | None = None


@dataclass(frozen=True)
class SpendRow:
    """Spend, tokens and counts of one (tenant, model, deployment, provider, period)."""

    tenant: str
    model: str
    deployment: str
    provider: str
    period: str
    requests: int
    succeeded: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal


@dataclass(frozen=True)
class DeploymentStats:
    """Latency percentiles (ms, successful calls) and the share of requests that failed."""

    deployment: str
    provider: str
    requests: int
    failed: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.failed / self.requests if self.requests else 0.0


def _where(flt: ReportFilter) -> list[Any]:
    clauses: list[Any] = [_T.c.finished_at.is_not(None)]
    if flt.since is not None:
        clauses.append(_T.c.finished_at >= _naive_utc(flt.since))
    if flt.until is not None:
        clauses.append(_T.c.finished_at < _naive_utc(flt.until))
    if flt.tenant is not None:
        clauses.append(_J.c.tenant_id == flt.tenant)
    if flt.job_id is not None:
        clauses.append(_T.c.job_id == flt.job_id)
    return clauses


def _naive_utc(value: datetime) -> datetime:
    """UTC without tzinfo: how SQLite stores our timestamps (PostgreSQL reads it as UTC)."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _period(engine: Engine, bucket: Bucket) -> Any:
    """finished_at as text to ``bucket`` precision, in UTC, on either database."""
    fmt, width = _FORMATS[bucket]
    if engine.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", _T.c.finished_at), fmt)
    text = func.substr(_T.c.finished_at, 1, width)
    return text if bucket == "day" else text + ":00"


def spend(engine: Engine, flt: ReportFilter, bucket: Bucket = "day") -> list[SpendRow]:
    """Finished requests grouped by tenant, model, deployment, provider and period."""
    period = _period(engine, bucket).label("period")
    ok = func.sum(case((_T.c.state == RequestState.SUCCEEDED.value, 1), else_=0))
    bad = func.sum(case((_T.c.state == RequestState.FAILED.value, 1), else_=0))
    keys = (_J.c.tenant_id, _T.c.model, _T.c.deployment, _T.c.provider, period)
    stmt = (
        select(*keys, func.count(), ok, bad, func.sum(_T.c.prompt_tokens),
               func.sum(_T.c.completion_tokens), func.sum(type_coerce(_T.c.cost, BigInteger)))
        .select_from(_T.join(_J, _J.c.id == _T.c.job_id))
        .where(*_where(flt))
        .group_by(*keys)
        .order_by(period, *keys[:4])
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [SpendRow(tenant=r[0], model=r[1], deployment=r[2] or "", provider=r[3] or "",
                     period=r[4], requests=int(r[5]), succeeded=int(r[6] or 0),
                     failed=int(r[7] or 0), prompt_tokens=int(r[8] or 0),
                     completion_tokens=int(r[9] or 0), cost=from_pico(int(r[10] or 0)))
            for r in rows]


def deployment_stats(engine: Engine, flt: ReportFilter) -> list[DeploymentStats]:
    """Per deployment that served or failed a request: counts, error rate, p50/p95/p99."""
    bad = func.sum(case((_T.c.state == RequestState.FAILED.value, 1), else_=0))
    ok = func.sum(case((_T.c.state == RequestState.SUCCEEDED.value, 1), else_=0))
    stmt = (
        select(_T.c.deployment, func.max(_T.c.provider), func.count(), bad, ok)
        .select_from(_T.join(_J, _J.c.id == _T.c.job_id))
        .where(*_where(flt), _T.c.deployment.is_not(None))
        .group_by(_T.c.deployment).order_by(_T.c.deployment)
    )
    out = []
    with engine.connect() as conn:
        for name, provider, n, failed, succeeded in conn.execute(stmt).all():
            marks = [_rank(conn, flt, name, int(succeeded or 0), p) for p in PERCENTILES]
            out.append(DeploymentStats(deployment=name, provider=provider or "",
                                       requests=int(n), failed=int(failed or 0),
                                       p50_ms=marks[0], p95_ms=marks[1], p99_ms=marks[2]))
    return out


def _rank(conn: Any, flt: ReportFilter, deployment: str, n: int, pct: int) -> float | None:
    """The nearest-rank ``pct`` percentile of the deployment's successful latencies."""
    if n == 0:
        return None
    offset = max(math.ceil(pct * n / 100) - 1, 0)
    stmt = (
        select(_T.c.latency_ms).select_from(_T.join(_J, _J.c.id == _T.c.job_id))
        .where(*_where(flt), _T.c.deployment == deployment,
               _T.c.state == RequestState.SUCCEEDED.value, _T.c.latency_ms.is_not(None))
        .order_by(_T.c.latency_ms).limit(1).offset(offset)
    )
    value = conn.execute(stmt).scalar()
    return None if value is None else float(value)

