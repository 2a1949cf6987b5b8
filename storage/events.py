"""Job events and their webhook deliveries: a transactional outbox in SQL.

A job's terminal event is inserted in the very transaction whose conditional UPDATE ends the
job (``finalize_job``; on PostgreSQL a worker's write does both in one statement,
``storage.batched.finish_and_count``), so it exists once however many workers or duplicate
messages race to finish the job; if that transaction rolls back, so does the event. Each
event gets one delivery row per endpoint; workers lease due deliveries the way they lease
requests (``claim_deliveries``), record every attempt, and reschedule or finish them.

An event's payload is its data as of the event. A terminal event written by that one
statement stores JSON ``null`` instead: its data is the job's final row, which no longer
changes once the job ended (every request is terminal, so nothing is counted into it again),
and ``event_data`` builds it from that row when the event is read, with the same
``job_event_data`` as an event written with its payload.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from schemas.errors import NotFoundError
from schemas.jobs import JobEnding, JobStatus
from schemas.webhooks import DeliveryState, EventResults, EventType, JobEventData, RequestCounts
from storage.db import without_transaction
from storage.models import ATTEMPTS, DELIVERIES, ENDPOINTS, EVENTS, JOBS

__all__ = [
    "EVENT_COLUMNS",
    "AttemptRecord",
    "DueDelivery",
    "add_job_event",
    "add_progress_events",
    "claim_deliveries",
    "event_data",
    "is_disabled",
    "job_ending",
    "job_events",
    "new_event_id",
    "record_attempt",
    "redeliver",
]

_E = EVENTS
_D = DELIVERIES
_J = JOBS
_DONE = {DeliveryState.SUCCEEDED, DeliveryState.FAILED, DeliveryState.DISABLED}


def new_event_id() -> str:
    """A time-ordered event id, used as the ``webhook-id``: ``msg_`` + 28 hex digits."""
    return f"msg_{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


EVENT_COLUMNS = tuple(_J.c[name] for name in (
    "id", "status", "tier", "total", "succeeded", "failed", "cancelled", "expired",
    "prompt_tokens", "completion_tokens", "cost", "metadata", "webhook_url", "created_at",
    "started_at", "finalizing_at", "completed_at", "expires_at"))
"""The columns of a jobs row that ``add_job_event`` reads."""


def job_event_data(job: Any) -> JobEventData:
    """The event data for a row of the jobs table (at least ``EVENT_COLUMNS``)."""
    errors = job.failed + job.cancelled + job.expired
    return JobEventData(
        id=job.id, status=job.status, tier=job.tier,
        request_counts=RequestCounts(total=job.total, succeeded=job.succeeded,
                                     failed=job.failed, cancelled=job.cancelled,
                                     expired=job.expired),
        prompt_tokens=job.prompt_tokens, completion_tokens=job.completion_tokens,
        cost_usd=job.cost, metadata=job.metadata or {}, created_at=_utc(job.created_at),
        started_at=_utc(job.started_at), finalizing_at=_utc(job.finalizing_at),
        completed_at=_utc(job.completed_at), expires_at=_utc(job.expires_at),
        results=EventResults(
            output_lines=job.succeeded, error_lines=errors,
            command=f"batchyard results {job.id} -o {job.id}.jsonl "
                    f"--errors {job.id}.errors.jsonl"),
    )


def job_ending(job: Any) -> JobEnding:
    """The ending of a job, from the row that ended it (``EVENT_COLUMNS`` at least)."""
    return JobEnding(
        id=job.id, status=job.status, succeeded=job.succeeded, failed=job.failed,
        cancelled=job.cancelled, expired=job.expired, prompt_tokens=job.prompt_tokens,
        completion_tokens=job.completion_tokens, cost=job.cost,
        started_at=_utc(job.started_at), finalizing_at=_utc(job.finalizing_at),
        completed_at=_utc(job.completed_at))


def event_data(conn: Connection, events: Sequence[Any]) -> list[dict[str, Any]]:
    """The data of each event row (``job_id`` and ``payload`` at least), in their order: the
    payload as stored, or for a terminal event stored without one, built from its job's row
    (one read for all of them)."""
    missing = {e.job_id for e in events if e.payload is None}
    jobs = {}
    if missing:
        jobs = {j.id: job_event_data(j).model_dump(mode="json") for j in conn.execute(
            select(*EVENT_COLUMNS).where(_J.c.id.in_(sorted(missing))))}
    return [dict(e.payload) if e.payload is not None else jobs[e.job_id] for e in events]


def job_events(engine: Engine, job_id: str) -> list[tuple[EventType, dict[str, Any]]]:
    """Every event of a job, oldest first: its type and data."""
    with without_transaction(engine) as conn:
        rows = conn.execute(select(_E.c.type, _E.c.job_id, _E.c.payload)
                            .where(_E.c.job_id == job_id)
                            .order_by(_E.c.created_at, _E.c.id)).all()
        data = event_data(conn, rows)
    return [(EventType(r.type), d) for r, d in zip(rows, data, strict=True)]


def add_job_event(conn: Connection, job: Any, kind: EventType, now: datetime) -> str:
    """Insert an event for ``job`` (a full jobs row) and a due delivery to its webhook URL.

    Runs inside the caller's transaction: the outbox write commits or rolls back with it.
    """
    event_id = new_event_id()
    data = job_event_data(job).model_dump(mode="json")
    conn.execute(_INSERT_EVENT, {"id": event_id, "job_id": job.id, "type": kind.value,
                                 "payload": data, "created_at": now})
    if job.webhook_url:
        _add_delivery(conn, event_id, job.webhook_url, now)
    return event_id


# Built once, the values passed as parameters (see storage.jobs._INSERT_JOB): a job's last
# write inserts its event on the path of every realtime result.
_INSERT_EVENT = insert(_E)
_INSERT_DELIVERY = insert(_D).returning(_D.c.id)


def _add_delivery(conn: Connection, event_id: str, url: str, now: datetime) -> int:
    row = conn.execute(_INSERT_DELIVERY, {
        "event_id": event_id, "url": url, "state": DeliveryState.PENDING.value, "attempts": 0,
        "next_attempt_at": now.timestamp(), "created_at": now}).one()
    return int(row.id)


def add_progress_events(engine: Engine, interval_s: float, now: datetime,
                        limit: int = 1000) -> int:
    """A ``job.progress`` event for each running job with a webhook URL whose progress moved
    since its last one, at most one per ``interval_s``; how many were added (leader only)."""
    added = 0
    with engine.connect() as conn:
        jobs = conn.execute(select(_J).where(
            _J.c.status == JobStatus.IN_PROGRESS.value, _J.c.webhook_url.is_not(None),
            _J.c.started_at.is_not(None)).order_by(_J.c.id).limit(limit)).all()
    for job in jobs:
        finished = job.succeeded + job.failed + job.cancelled + job.expired
        with engine.begin() as conn:
            last = conn.execute(
                select(_E.c.created_at, _E.c.payload)
                .where(_E.c.job_id == job.id, _E.c.type == EventType.PROGRESS.value)
                .order_by(_E.c.created_at.desc()).limit(1)).first()
            if finished == 0 or (last is not None and (
                    (now - (_utc(last.created_at) or now)).total_seconds() < interval_s
                    or _finished(last.payload) == finished)):
                continue
            add_job_event(conn, job, EventType.PROGRESS, now)
            added += 1
    return added


def _finished(payload: dict[str, Any]) -> int:
    counts = payload.get("request_counts", {})
    return sum(int(counts.get(k, 0)) for k in ("succeeded", "failed", "cancelled", "expired"))


@dataclass(frozen=True)
class DueDelivery:
    """A delivery this worker leased: what to POST where, and which attempt this is."""

    id: int
    event_id: str
    event_type: EventType
    url: str
    attempt: int
    claim: str
    data: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class AttemptRecord:
    """What one POST did (status or transport error, latency, the first 1 KB of the answer)."""

    started_at: datetime
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    response_excerpt: str | None = None


def claim_deliveries(engine: Engine, token: str, lease_s: float, now: float,
                     limit: int) -> list[DueDelivery]:
    """Lease up to ``limit`` due deliveries: pending ones whose time came, and lapsed leases."""
    due = or_(
        and_(_D.c.state == DeliveryState.PENDING.value, _D.c.next_attempt_at <= now),
        and_(_D.c.state == DeliveryState.DELIVERING.value, _D.c.lease_until < now),
    )
    with engine.begin() as conn:
        ids = list(conn.execute(
            select(_D.c.id).where(due).order_by(_D.c.next_attempt_at).limit(limit)).scalars())
        if not ids:
            return []
        won = list(conn.execute(
            update(_D).where(_D.c.id.in_(ids), due)
            .values(state=DeliveryState.DELIVERING.value, claim=token,
                    lease_until=now + lease_s, attempts=_D.c.attempts + 1)
            .returning(_D.c.id)).scalars())
        if not won:
            return []
        rows = conn.execute(
            select(_D.c.id, _D.c.event_id, _D.c.url, _D.c.attempts, _E.c.type, _E.c.job_id,
                   _E.c.payload, _E.c.created_at)
            .join(_E, _E.c.id == _D.c.event_id).where(_D.c.id.in_(won)).order_by(_D.c.id)
        ).all()
        data = event_data(conn, rows)
    return [DueDelivery(id=r.id, event_id=r.event_id, event_type=EventType(r.type), url=r.url,
                        attempt=r.attempts, claim=token, data=d,
                        created_at=_utc(r.created_at) or datetime.now(UTC))
            for r, d in zip(rows, data, strict=True)]


def record_attempt(engine: Engine, delivery: DueDelivery, attempt: AttemptRecord | None,
                   state: DeliveryState, next_at: float | None) -> None:
    """Store an attempt and move the delivery on: retry at ``next_at``, or finish in ``state``.

    A 410 (``state`` disabled) also disables the endpoint and every delivery still waiting
    for it. A worker whose lease ran out still records its attempt but moves nothing.
    """
    now = datetime.now(UTC)
    with engine.begin() as conn:
        if attempt is not None:
            conn.execute(insert(ATTEMPTS).values(
                delivery_id=delivery.id, attempt=delivery.attempt,
                started_at=attempt.started_at, status_code=attempt.status_code,
                latency_ms=attempt.latency_ms, error=attempt.error,
                response_excerpt=attempt.response_excerpt))
        conn.execute(
            update(_D).where(_D.c.id == delivery.id, _D.c.claim == delivery.claim)
            .values(state=state.value, next_attempt_at=next_at, claim=None, lease_until=None,
                    last_status=None if attempt is None else attempt.status_code,
                    last_error=None if attempt is None else attempt.error,
                    finished_at=now if state in _DONE else None))
        if state is DeliveryState.DISABLED and attempt is not None:
            _disable(conn, delivery.url, f"answered {attempt.status_code}", now)


def _disable(conn: Connection, url: str, reason: str, now: datetime) -> None:
    moved = conn.execute(update(ENDPOINTS).where(ENDPOINTS.c.url == url)
                         .values(disabled_at=now, reason=reason)).rowcount
    if not moved:
        try:
            with conn.begin_nested():
                conn.execute(insert(ENDPOINTS).values(url=url, disabled_at=now, reason=reason))
        except IntegrityError:
            pass  # another worker disabled it at the same moment
    conn.execute(
        update(_D).where(_D.c.url == url, _D.c.state == DeliveryState.PENDING.value)
        .values(state=DeliveryState.DISABLED.value, next_attempt_at=None, finished_at=now,
                last_error=f"endpoint disabled: {reason}"))


def is_disabled(engine: Engine, url: str) -> bool:
    """Whether ``url`` answered 410 Gone and has not been re-enabled by a redelivery."""
    with engine.connect() as conn:
        row = conn.execute(select(ENDPOINTS.c.disabled_at).where(ENDPOINTS.c.url == url)).first()
    return row is not None and row.disabled_at is not None


def redeliver(engine: Engine, event_id: str, url: str | None = None) -> int:
    """Queue ``event_id`` again (same webhook-id) and re-enable its endpoint; the delivery id.

    The URL is ``url``, else the one it was last sent to, else the job's webhook URL.
    """
    now = datetime.now(UTC)
    with engine.begin() as conn:
        event = conn.execute(select(_E.c.id, _J.c.webhook_url).join(_J, _J.c.id == _E.c.job_id)
                             .where(_E.c.id == event_id)).first()
        if event is None:
            raise NotFoundError(f"no event {event_id!r}")
        last = conn.execute(select(_D.c.url).where(_D.c.event_id == event_id)
                            .order_by(_D.c.id.desc()).limit(1)).scalar()
        target = url or last or event.webhook_url
        if not target:
            raise NotFoundError(f"event {event_id!r} has no webhook URL to deliver to")
        conn.execute(update(ENDPOINTS).where(ENDPOINTS.c.url == target)
                     .values(disabled_at=None, reason=None))
        return _add_delivery(conn, event_id, target, now)


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
