"""Aggregate queries over requests: usage and cost per model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import BigInteger, Engine, case, func, select, type_coerce

from schemas.jobs import RequestState
from storage.models import REQUESTS
from storage.money import from_pico

__all__ = ["ModelUsage", "usage_by_model"]

_T = REQUESTS


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
