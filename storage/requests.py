"""The request lifecycle in SQL: claim, record, defer, finalize. Every write is conditional.

Exactly-once effects rest on conditional updates: a result is written (and charged, and counted
into its job) only by the UPDATE that moves the row out of a non-terminal state; a job completes
only by the UPDATE that moves it out of an active status. Duplicate deliveries find nothing to do.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Connection, Engine, and_, case, or_, select, update

from schemas.jobs import ACTIVE_JOB_STATUSES, TERMINAL_REQUEST_STATES, JobStatus, RequestState
from schemas.outcomes import Claimed, Outcome, OutcomeKind
from storage.models import JOBS, REQUESTS

__all__ = ["claim", "finalize_job", "record"]

CLAIM_SKEW_S = 1.0
"""A deferral due within this many seconds may be claimed (clocks of hosts differ a little)."""

_T = REQUESTS
_J = JOBS
_TERMINAL = [s.value for s in TERMINAL_REQUEST_STATES]


def claim(engine: Engine, job_id: str, seqs: Sequence[int], token: str, lease_s: float,
          now: float) -> list[Claimed]:
    """Lease the runnable rows among ``seqs``: queued, due deferrals, and expired leases."""
    runnable = or_(
        and_(
            _T.c.state.in_([RequestState.QUEUED, RequestState.DEFERRED]),
            or_(_T.c.not_before.is_(None), _T.c.not_before <= now + CLAIM_SKEW_S),
        ),
        and_(_T.c.state == RequestState.RUNNING, _T.c.lease_until < now),
    )
    stmt = (
        update(_T)
        .where(_T.c.job_id == job_id, _T.c.seq.in_(list(seqs)), runnable)
        .values(state=RequestState.RUNNING, claim=token, lease_until=now + lease_s,
                attempts=_T.c.attempts + 1)
        .returning(_T.c.seq, _T.c.custom_id, _T.c.model, _T.c.body, _T.c.attempts)
    )
    with engine.begin() as conn:
        rows = conn.execute(stmt).all()
        if rows:
            conn.execute(
                update(_J).where(_J.c.id == job_id, _J.c.started_at.is_(None))
                .values(started_at=datetime.now(UTC))
            )
    return [
        Claimed(job_id=job_id, seq=r.seq, custom_id=r.custom_id, model=r.model, body=r.body,
                attempts=r.attempts, claim=token)
        for r in rows
    ]


class _Delta:
    __slots__ = ("completion_tokens", "cost", "failed", "prompt_tokens", "succeeded")

    def __init__(self) -> None:
        self.succeeded = self.failed = self.prompt_tokens = self.completion_tokens = 0
        self.cost = Decimal(0)


def record(engine: Engine, outcomes: Sequence[Outcome]) -> list[tuple[str, str]]:
    """Write a batch of outcomes in one transaction; return the jobs this batch finished."""
    deltas: dict[str, _Delta] = defaultdict(_Delta)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for outcome in outcomes:
            if outcome.kind is OutcomeKind.DEFERRED:
                _defer(conn, outcome)
            elif _finish(conn, outcome, now):
                delta = deltas[outcome.job_id]
                if outcome.kind is OutcomeKind.SUCCEEDED:
                    delta.succeeded += 1
                else:
                    delta.failed += 1
                delta.prompt_tokens += outcome.usage.prompt_tokens
                delta.completion_tokens += outcome.usage.completion_tokens
                delta.cost += outcome.cost
        finished = []
        for job_id, delta in deltas.items():
            conn.execute(
                update(_J).where(_J.c.id == job_id).values(
                    succeeded=_J.c.succeeded + delta.succeeded,
                    failed=_J.c.failed + delta.failed,
                    prompt_tokens=_J.c.prompt_tokens + delta.prompt_tokens,
                    completion_tokens=_J.c.completion_tokens + delta.completion_tokens,
                    cost=_J.c.cost + delta.cost,
                )
            )
            status = finalize_job(conn, job_id, now)
            if status is not None:
                finished.append((job_id, status))
    return finished


def _finish(conn: Connection, o: Outcome, now: datetime) -> bool:
    """Move a row to its terminal state unless it is there already; True when this did it."""
    stmt = (
        update(_T)
        .where(_T.c.job_id == o.job_id, _T.c.seq == o.seq, _T.c.state.not_in(_TERMINAL))
        .values(
            state=o.kind.value, claim=None, lease_until=None, not_before=None,
            deployment=o.deployment, provider=o.provider, status_code=o.status_code,
            upstream_request_id=o.upstream_request_id, response=o.response,
            error_code=o.error_code, error_message=o.error_message,
            prompt_tokens=o.usage.prompt_tokens, completion_tokens=o.usage.completion_tokens,
            cached_tokens=o.usage.cached_tokens, cost=o.cost, latency_ms=o.latency_ms,
            finished_at=now,
        )
        .returning(_T.c.seq)
    )
    return conn.execute(stmt).first() is not None


def _defer(conn: Connection, o: Outcome) -> None:
    """Put a row back to wait for ``not_before``, if this worker's claim still holds it."""
    conn.execute(
        update(_T)
        .where(_T.c.job_id == o.job_id, _T.c.seq == o.seq,
               _T.c.state == RequestState.RUNNING, _T.c.claim == o.claim)
        .values(state=RequestState.DEFERRED, claim=None, lease_until=None,
                not_before=o.not_before, deployment=o.deployment, provider=o.provider,
                status_code=o.status_code, error_code=o.error_code,
                error_message=o.error_message)
    )


def finalize_job(conn: Connection, job_id: str, now: datetime) -> str | None:
    """End the job if every request is terminal; the status it ended with, once, else None."""
    done = _J.c.succeeded + _J.c.failed + _J.c.cancelled + _J.c.expired
    final = case(
        (_J.c.status == JobStatus.CANCELLING, JobStatus.CANCELLED.value),
        else_=JobStatus.COMPLETED.value,
    )
    row = conn.execute(
        update(_J)
        .where(_J.c.id == job_id, _J.c.status.in_([s.value for s in ACTIVE_JOB_STATUSES]),
               done >= _J.c.total)
        .values(status=final, completed_at=now)
        .returning(_J.c.status)
    ).first()
    return None if row is None else str(row.status)


def select_runnable_seqs(conn: Connection, job_id: str) -> list[int]:
    """Every queued or deferred seq of a job, for re-publishing."""
    return list(conn.execute(
        select(_T.c.seq).where(
            _T.c.job_id == job_id,
            _T.c.state.in_([RequestState.QUEUED, RequestState.DEFERRED]),
        ).order_by(_T.c.seq)
    ).scalars())
