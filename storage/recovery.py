"""Queries the reconciler runs: deferrals that are due, leases that ran out, lost dispatches.

Each ``find_*`` returns (job_id, tier, seqs) groups to publish; the matching ``mark_*`` runs
after the publish succeeded, so a crash in between only publishes twice (claims dedupe).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime

from sqlalchemy import Engine, select, update

from schemas.jobs import ACTIVE_JOB_STATUSES, JobStatus, RequestState
from schemas.keys import Tier
from storage.models import JOBS, REQUESTS, state_is

__all__ = [
    "Group",
    "find_due_deferred",
    "find_expired_leases",
    "find_stranded",
    "find_undispatched_jobs",
    "iter_waiting",
    "mark_requeued",
]

_T = REQUESTS
_J = JOBS
_ACTIVE = [s.value for s in ACTIVE_JOB_STATUSES]

Group = tuple[str, Tier, list[int]]


def _grouped(rows: Sequence[tuple[str, str, int]]) -> list[Group]:
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for job_id, tier, seq in rows:
        groups[(job_id, tier)].append(seq)
    return [(job_id, Tier(tier), seqs) for (job_id, tier), seqs in groups.items()]


def find_due_deferred(engine: Engine, now: float, limit: int) -> list[Group]:
    """Deferred requests whose wait is over."""
    stmt = (
        select(_T.c.job_id, _J.c.tier, _T.c.seq)
        .join(_J, _J.c.id == _T.c.job_id)
        .where(state_is(RequestState.DEFERRED), _T.c.not_before <= now,
               _J.c.status == JobStatus.IN_PROGRESS)  # a stopped job's are ended instead
        .order_by(_T.c.not_before)
        .limit(limit)
    )
    with engine.connect() as conn:
        return _grouped([tuple(r) for r in conn.execute(stmt).all()])


def find_expired_leases(engine: Engine, now: float, limit: int) -> list[Group]:
    """Running requests whose worker stopped renewing them (it crashed or was cut off)."""
    stmt = (
        select(_T.c.job_id, _J.c.tier, _T.c.seq)
        .join(_J, _J.c.id == _T.c.job_id)
        .where(state_is(RequestState.RUNNING), _T.c.lease_until < now,
               _J.c.status == JobStatus.IN_PROGRESS)  # a stopped job's are ended instead
        .limit(limit)
    )
    with engine.connect() as conn:
        return _grouped([tuple(r) for r in conn.execute(stmt).all()])


def find_stranded(engine: Engine, tier: Tier, limit: int) -> list[Group]:
    """Queued requests of a tier's running, dispatched jobs: asked for when the broker holds
    no message of that tier at all, so none of these has one left, whatever lost it.

    Job by job (the jobs index, then each job's live rows' index): a join would walk
    every queued row of every tier, a million for a bulk backlog, on every pass.
    """
    jobs = select(_J.c.id).where(_J.c.tier == tier.value, _J.c.status == JobStatus.IN_PROGRESS,
                                 _J.c.dispatched_at.is_not(None))
    groups: list[Group] = []
    with engine.connect() as conn:
        for job_id in conn.execute(jobs).scalars().all():
            seqs = list(conn.execute(select(_T.c.seq).where(
                _T.c.job_id == job_id, state_is(RequestState.QUEUED)).limit(limit)).scalars())
            if seqs:
                groups.append((job_id, tier, seqs))
                limit -= len(seqs)
            if limit <= 0:
                break
    return groups


def mark_requeued(engine: Engine, job_id: str, seqs: Sequence[int], now: float) -> None:
    """After publishing: due deferrals and lapsed leases become plain queued rows."""
    with engine.begin() as conn:
        conn.execute(
            update(_T)
            .where(_T.c.job_id == job_id, _T.c.seq.in_(list(seqs)),
                   ((_T.c.state == RequestState.DEFERRED) & (_T.c.not_before <= now))
                   | ((_T.c.state == RequestState.RUNNING) & (_T.c.lease_until < now)))
            .values(state=RequestState.QUEUED, claim=None, lease_until=None, not_before=None)
        )


def find_undispatched_jobs(engine: Engine, older_than: datetime) -> list[tuple[str, Tier]]:
    """Active jobs whose producer never finished publishing them."""
    stmt = select(_J.c.id, _J.c.tier).where(
        _J.c.status.in_(_ACTIVE), _J.c.dispatched_at.is_(None), _J.c.created_at < older_than
    )
    with engine.connect() as conn:
        return [(r.id, Tier(r.tier)) for r in conn.execute(stmt).all()]


def iter_waiting(engine: Engine, page: int = 10_000) -> Iterator[Group]:
    """Every queued request of every active job (after the broker lost its messages)."""
    after: tuple[str, int] = ("", -1)
    while True:
        stmt = (
            select(_T.c.job_id, _J.c.tier, _T.c.seq)
            .join(_J, _J.c.id == _T.c.job_id)
            .where(_J.c.status.in_(_ACTIVE), state_is(RequestState.QUEUED),
                   (_T.c.job_id > after[0]) | ((_T.c.job_id == after[0]) & (_T.c.seq > after[1])))
            .order_by(_T.c.job_id, _T.c.seq)
            .limit(page)
        )
        with engine.connect() as conn:
            rows = conn.execute(stmt).all()
        yield from _grouped([tuple(r) for r in rows])
        if len(rows) < page:
            return
        after = (rows[-1].job_id, rows[-1].seq)

