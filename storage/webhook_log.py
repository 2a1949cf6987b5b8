"""Reading the webhook log: deliveries with their attempts, for ``batchyard webhooks list``."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import Engine, select

from schemas.errors import NotFoundError
from schemas.webhooks import AttemptView, DeliveryState, DeliveryView, EventType
from storage.models import ATTEMPTS, DELIVERIES, EVENTS, JOBS

__all__ = ["list_deliveries", "list_events"]

_D = DELIVERIES
_E = EVENTS
_A = ATTEMPTS


def list_deliveries(engine: Engine, job_id: str | None = None, *,
                    limit: int = 50) -> list[DeliveryView]:
    """A job's deliveries (all of them, oldest first), or the latest ``limit`` of every job."""
    stmt = select(_D, _E.c.type, _E.c.job_id).join(_E, _E.c.id == _D.c.event_id)
    if job_id is not None:
        stmt = stmt.where(_E.c.job_id == job_id).order_by(_D.c.id)
    else:
        stmt = stmt.order_by(_D.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        if job_id is not None and conn.execute(
                select(JOBS.c.id).where(JOBS.c.id == job_id)).first() is None:
            raise NotFoundError(f"no job {job_id!r}")
        rows = conn.execute(stmt).all()
        attempts = conn.execute(
            select(_A).where(_A.c.delivery_id.in_([r.id for r in rows]))
            .order_by(_A.c.delivery_id, _A.c.attempt, _A.c.id)).all()
    log: dict[int, list[AttemptView]] = defaultdict(list)
    for a in attempts:
        log[a.delivery_id].append(AttemptView(
            attempt=a.attempt, started_at=_utc(a.started_at), status_code=a.status_code,
            latency_ms=a.latency_ms, error=a.error, response_excerpt=a.response_excerpt))
    return [DeliveryView(
        id=r.id, event_id=r.event_id, event_type=EventType(r.type), job_id=r.job_id, url=r.url,
        state=DeliveryState(r.state), attempts=r.attempts,
        next_attempt_at=None if r.next_attempt_at is None
        else datetime.fromtimestamp(r.next_attempt_at, UTC),
        last_status=r.last_status, last_error=r.last_error, created_at=_utc(r.created_at),
        finished_at=_utc(r.finished_at) if r.finished_at else None,
        attempt_log=log.get(r.id, []),
    ) for r in rows]


def list_events(engine: Engine, job_id: str) -> list[tuple[str, EventType, datetime]]:
    """A job's events (id, type, time), oldest first, whether or not any was delivered."""
    with engine.connect() as conn:
        rows = conn.execute(select(_E.c.id, _E.c.type, _E.c.created_at)
                            .where(_E.c.job_id == job_id).order_by(_E.c.created_at)).all()
    return [(r.id, EventType(r.type), _utc(r.created_at)) for r in rows]


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
