"""What Redis forgets and the database remembers: the spend and the recent calls that the
quota and rate-limit windows are seeded with after Redis lost its data (``routing.quotas``,
``routing.limits``)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Engine, and_, case, func, select, type_coerce

from schemas.jobs import RequestState
from schemas.tenants import QuotaScope, ScopeHistory
from storage.models import JOBS, REQUESTS, state_is
from storage.money import from_pico

__all__ = ["HISTORY_CALLS", "deployment_calls", "usage_history"]

HISTORY_CALLS = 5_000
"""Calls of the last window read back at most (a limit is rarely above it); past it the
rest are folded into one call that holds their tokens."""

_T = REQUESTS


def usage_history(engine: Engine, scope: QuotaScope, edges: Sequence[float],
                  since: float | None, *, limit: int = HISTORY_CALLS) -> ScopeHistory:
    """A tenant's (or one of its keys') cost of requests finished between consecutive
    ``edges`` (epoch s), and, given ``since``, its calls answered since then and those running
    now (newest first)."""
    jobs = select(JOBS.c.id).where(JOBS.c.tenant_id == scope.tenant_id)
    if scope.key_id is not None:
        jobs = jobs.where(JOBS.c.api_key_id == scope.key_id)
    mine = _T.c.job_id.in_(jobs)
    when = [datetime.fromtimestamp(e, UTC) for e in edges]
    spend: list[Decimal] = []
    calls: list[tuple[float, int]] = []
    with engine.connect() as conn:
        if len(when) > 1:
            cost = type_coerce(_T.c.cost, BigInteger)
            sums = [func.sum(case((and_(_T.c.finished_at >= a, _T.c.finished_at < b), cost),
                                  else_=0))
                    for a, b in itertools.pairwise(when)]
            row = conn.execute(select(*sums).where(mine, _T.c.finished_at >= when[0],
                                                   _T.c.finished_at < when[-1])).one()
            spend = [from_pico(v) for v in row]
        if since is not None:
            now = time.time()
            running = conn.execute(select(func.count()).where(
                mine, state_is(RequestState.RUNNING), _T.c.lease_until > now)).scalar()
            calls = [(now, 0)] * min(int(running or 0), limit)
            calls = _fold([*calls, *_answered(conn, mine, since, limit)], limit)
    return ScopeHistory(spend=spend, calls=calls)


def deployment_calls(engine: Engine, deployment: str, since: float, *,
                     limit: int = HISTORY_CALLS) -> list[tuple[float, int]]:
    """The deployment's calls answered since ``since`` (epoch s), newest first: (answer time
    in epoch s, tokens used)."""
    with engine.connect() as conn:
        return _fold(_answered(conn, _T.c.deployment == deployment, since, limit), limit)


def _answered(conn: Any, where: Any, since: float, limit: int) -> list[tuple[float, int]]:
    rows = conn.execute(
        select(_T.c.finished_at, _T.c.prompt_tokens, _T.c.completion_tokens)
        .where(where, _T.c.finished_at >= datetime.fromtimestamp(since, UTC), _T.c.attempts > 0)
        .order_by(_T.c.finished_at.desc()).limit(limit + 1)).all()
    return [(_utc(r.finished_at).timestamp(), r.prompt_tokens + r.completion_tokens)
            for r in rows]


def _fold(calls: list[tuple[float, int]], limit: int) -> list[tuple[float, int]]:
    """At most ``limit`` calls: the oldest past it become one call holding their tokens."""
    if len(calls) <= limit:
        return calls
    return [*calls[:limit - 1], (calls[-1][0], sum(t for _, t in calls[limit - 1:]))]


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
