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
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    Update,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    true,
    update,
)

from schemas.jobs import ACTIVE_JOB_STATUSES, JobEnding, JobStatus, RequestState, RoutingOptions
from schemas.outcomes import Claimed, Outcome, OutcomeKind
from schemas.tenants import DEFAULT_TENANT, TenantLimits
from schemas.webhooks import TERMINAL_EVENTS
from storage.batched import defer_rows, finish_and_count, finish_rows
from storage.db import lazy_commit, without_transaction
from storage.direct import ThreadConnections, for_psycopg
from storage.events import EVENT_COLUMNS, add_job_event, job_ending
from storage.models import API_KEYS, JOBS, REQUESTS, TENANTS, state_in

__all__ = ["claim", "finalize_job", "record"]

CLAIM_SKEW_S = 1.0
"""A deferral due within this many seconds may be claimed (clocks of hosts differ a little)."""

_T = REQUESTS
_J = JOBS


# Built once: constructing SQLAlchemy expressions per call cost more CPU than the round trips.
_RUNNABLE = or_(
    and_(
        _T.c.state.in_([RequestState.QUEUED, RequestState.DEFERRED]),
        or_(_T.c.not_before.is_(None), _T.c.not_before <= bindparam("c_due")),
    ),
    and_(_T.c.state == RequestState.RUNNING, _T.c.lease_until < bindparam("c_now")),
)
def _claim_statement(*, retry: bool, ranged: bool) -> Update:
    """The claim's UPDATE. ``retry``: a retried claim whose first try committed unseen takes
    its own rows back too. ``ranged`` (PostgreSQL): the claimed seqs' span is a condition too.

    A range on the key's second column is always an index condition, so the rows PostgreSQL
    reads stay within the chunk's span whatever it believes of the job's size. Without it, a
    job the planner took for small (no statistics yet, or a table of many one-row jobs) was
    read whole and filtered by seq: every claim cost time in proportion to the job's backlog
    (migration 0006 has the figures). SQLite looks each seq up by key on its own, and given
    the range it would scan the span instead, which is longer for a sparse chunk.
    """
    chunk = [_T.c.job_id == bindparam("c_job"),
             _T.c.seq.in_(bindparam("c_seqs", expanding=True))]
    if ranged:
        chunk.append(_T.c.seq.between(bindparam("c_first"), bindparam("c_last")))
    mine = and_(_T.c.state == RequestState.RUNNING, _T.c.claim == bindparam("c_token"))
    return (
        update(_T)
        .where(*chunk, or_(_RUNNABLE, mine) if retry else _RUNNABLE)
        .values(state=RequestState.RUNNING, claim=bindparam("c_token"),
                lease_until=bindparam("c_until"),
                attempts=case((mine, _T.c.attempts), else_=_T.c.attempts + 1) if retry
                else _T.c.attempts + 1)
        .returning(_T.c.seq, _T.c.custom_id, _T.c.model, _T.c.body, _T.c.attempts, _T.c.route)
    )


_CLAIMS = {(retry, ranged): _claim_statement(retry=retry, ranged=ranged)
           for retry in (False, True) for ranged in (False, True)}
_JOB_CONTEXT = (select(_J.c.routing, _J.c.tenant_id, TENANTS.c.limits, _J.c.api_key_id,
                       API_KEYS.c.limits.label("key_limits"))
                .select_from(_J.outerjoin(TENANTS, TENANTS.c.id == _J.c.tenant_id)
                             .outerjoin(API_KEYS, API_KEYS.c.id == _J.c.api_key_id))
                .where(_J.c.id == bindparam("c_job")))
_STARTED = (update(_J).where(_J.c.id == bindparam("c_job"), _J.c.started_at.is_(None))
            .values(started_at=bindparam("c_at")))


def _claim_in_one(retry: bool) -> Select[Any]:
    """PostgreSQL: the claim, the job's ``started_at`` and its context in one statement.

    The UPDATE of the rows is a CTE; the job's start is stamped by a second one that runs only
    if the first claimed something. It counts the first one's RETURNING, which makes
    PostgreSQL run the rows' UPDATE to its end first: locks are taken in the order every writer
    takes them (request rows, then the job's row; see ``record``). The select joins
    the claimed rows to the job's routing options and limits. One statement is one implicit
    transaction, so it runs without BEGIN and COMMIT: one round trip where the three
    statements of ``_claim_apart`` took six. Both CTEs always run to completion (PostgreSQL
    runs a data-modifying CTE whether or not the query reads it). Its commit is not waited
    for (``lazy_commit``: a lease lost to a server crash delays its row, never loses it).
    """
    claimed = _CLAIMS[retry, True].cte("claimed")
    started = (update(_J)
               .where(_J.c.id == bindparam("c_job"), _J.c.started_at.is_(None),
                      select(func.count()).select_from(claimed).scalar_subquery() > 0)
               .values(started_at=bindparam("c_at")).cte("started"))
    context = _JOB_CONTEXT.subquery("context")
    return (select(claimed, context.c.routing, context.c.tenant_id, context.c.limits,
                   context.c.api_key_id, context.c.key_limits, lazy_commit())
            .select_from(claimed.outerjoin(context, true()))
            .add_cte(started))


_CLAIM_IN_ONE = {retry: _claim_in_one(retry) for retry in (False, True)}


def claim(engine: Engine, job_id: str, seqs: Sequence[int], token: str, lease_s: float,  # noqa: PLR0913
          now: float, *, retry: bool = False, direct: ThreadConnections | None = None
          ) -> list[Claimed]:
    """Lease the runnable rows among ``seqs``: queued, due deferrals, and expired leases.

    ``retry``: an earlier claim of these rows by ``token`` failed, but its commit may have
    reached the database before the connection dropped: rows already leased to ``token`` are
    taken back too (without counting another attempt), instead of waiting for their lease.
    ``direct`` (PostgreSQL): run the statement on the calling thread's own connection, not
    through the engine (storage/direct.py; the same statement, half the client's CPU).
    """
    if not seqs:
        return []
    params = {"c_job": job_id, "c_seqs": list(seqs), "c_first": min(seqs), "c_last": max(seqs),
              "c_due": now + CLAIM_SKEW_S, "c_now": now, "c_token": token,
              "c_until": now + lease_s, "c_at": datetime.now(UTC)}
    rows: Sequence[Any]
    if engine.dialect.name == "postgresql":
        if direct is not None and direct.ready():
            rows = direct.rows(for_psycopg(_CLAIM_IN_ONE[retry]), params)
        else:
            with without_transaction(engine) as conn:
                rows = conn.execute(_CLAIM_IN_ONE[retry], params).all()
        job = rows[0] if rows else None
    else:
        rows, job = _claim_apart(engine, params, retry)
    options = RoutingOptions.model_validate(job.routing) if job and job.routing else None
    tenant = job.tenant_id if job else DEFAULT_TENANT
    limits = TenantLimits.model_validate(job.limits) if job and job.limits else None
    own = TenantLimits.model_validate(job.key_limits) if job and job.key_limits else None
    key_id = job.api_key_id if job else None
    return [
        Claimed(job_id=job_id, seq=r.seq, custom_id=r.custom_id, model=r.model, body=r.body,
                attempts=r.attempts, claim=token, route=r.route, routing=options,
                tenant_id=tenant, tenant_limits=limits, key_id=key_id, key_limits=own)
        for r in rows
    ]


def _claim_apart(engine: Engine, params: dict[str, Any], retry: bool
                 ) -> tuple[Sequence[Any], Any]:
    """SQLite: the claim's three statements in one transaction (SQLite has no UPDATE in a
    CTE); a transaction there is no round trip. The claimed rows and the job's context."""
    with engine.begin() as conn:
        rows = conn.execute(_CLAIMS[retry, False], params).all()
        if not rows:
            return [], None
        conn.execute(_STARTED, params)
        # the job's routing options and its tenant's limits: one lookup per chunk
        return rows, conn.execute(_JOB_CONTEXT, params).first()


class _Delta:
    __slots__ = ("completion_tokens", "cost", "failed", "prompt_tokens", "succeeded")

    def __init__(self) -> None:
        self.succeeded = self.failed = self.prompt_tokens = self.completion_tokens = 0
        self.cost = Decimal(0)

    def add(self, outcome: Outcome) -> None:
        if outcome.kind is OutcomeKind.SUCCEEDED:
            self.succeeded += 1
        else:
            self.failed += 1
        self.prompt_tokens += outcome.usage.prompt_tokens
        self.completion_tokens += outcome.usage.completion_tokens
        self.cost += outcome.cost


ROWS_PER_STATEMENT = 1000
"""Outcomes one statement carries (one JSON parameter, so bounded only to keep it modest)."""

_DONE = _J.c.succeeded + _J.c.failed + _J.c.cancelled + _J.c.expired
_ACTIVE = [s.value for s in ACTIVE_JOB_STATUSES]
_COUNT = (
    update(_J).where(_J.c.id == bindparam("n_job"))
    .values(succeeded=_J.c.succeeded + bindparam("n_ok"),
            failed=_J.c.failed + bindparam("n_bad"),
            prompt_tokens=_J.c.prompt_tokens + bindparam("n_in"),
            completion_tokens=_J.c.completion_tokens + bindparam("n_out"),
            cost=_J.c.cost + bindparam("n_cost"))
    .returning(_J.c.status, _DONE.label("done"), _J.c.total)
)


def record(engine: Engine, outcomes: Sequence[Outcome]) -> list[JobEnding]:
    """Write a batch of outcomes in one transaction (on PostgreSQL, one statement and
    transaction per part of ``ROWS_PER_STATEMENT`` finishes, the deferrals with the first);
    return the endings of the jobs this batch finished.

    A handful of statements per batch, whatever its size (round trips and statement parsing
    are the cost on PostgreSQL; see storage/batched.py). On PostgreSQL: one UPDATE for the
    deferrals, then one statement that finishes the rows, counts those it
    moved out of a non-terminal state (only those are charged) into their jobs, ends the jobs
    they complete and writes their events (``batched.finish_and_count``). On SQLite, in one
    transaction: one UPDATE for the finished rows, whose RETURNING names the rows moved; one
    for the deferrals; one per job for its counters, whose RETURNING tells whether the job may
    end (only then is ``finalize_job``'s UPDATE sent, with its event).

    Locks are taken in one order by every writer, so two writers never wait on each other in
    a cycle (PostgreSQL would abort one as a deadlock): request rows, then the jobs' counter
    rows by job id. That is why PostgreSQL writes the deferrals first (the finishing statement
    locks the jobs), and why a batch of more than ``ROWS_PER_STATEMENT`` finishes is written
    there as one transaction per part: a part's jobs stay locked until its commit, and the
    next part's rows would be locked after them. Each part is whole; a retry after a failure
    between them finds the earlier parts' rows terminal and writes nothing twice.

    A deferral of a row the batch also finishes (a call handed back at shutdown, then
    answered) is dropped: written after the finish, as it used to be, it found the row
    terminal and did nothing; written first, it would give back a throttled attempt.
    """
    finishing: dict[tuple[str, int], Outcome] = {}
    deferring: dict[tuple[str, int, str], Outcome] = {}
    # A row's first final outcome wins (the same end state as writing the batch one outcome
    # at a time).
    for o in outcomes:
        if o.kind is OutcomeKind.DEFERRED:
            deferring.setdefault((o.job_id, o.seq, o.claim), o)
        else:
            finishing.setdefault((o.job_id, o.seq), o)
    finishes = [finishing[k] for k in sorted(finishing)]
    deferrals = [deferring[k] for k in sorted(deferring) if k[:2] not in finishing]
    now = datetime.now(UTC)
    if engine.dialect.name == "postgresql":
        return _record_in_parts(engine, finishes, deferrals, now)
    with engine.begin() as conn:
        deltas: dict[str, _Delta] = defaultdict(_Delta)
        for part in _parts(finishes):
            for job_id, seq in finish_rows(conn, part, now):
                deltas[job_id].add(finishing[(job_id, seq)])
        for part in _parts(deferrals):
            defer_rows(conn, part)
        finished = []
        for job_id in sorted(deltas):
            delta = deltas[job_id]
            job = conn.execute(_COUNT, {
                "n_job": job_id, "n_ok": delta.succeeded, "n_bad": delta.failed,
                "n_in": delta.prompt_tokens, "n_out": delta.completion_tokens,
                "n_cost": delta.cost}).first()
            if job is None or job.status not in _ACTIVE or job.done < job.total:
                continue  # finalize_job would find nothing to do: skip its statement
            ending = finalize_job(conn, job_id, now)
            if ending is not None:
                finished.append(ending)
    return finished


def _record_in_parts(engine: Engine, finishes: list[Outcome], deferrals: list[Outcome],
                     now: datetime) -> list[JobEnding]:
    """PostgreSQL's ``record``: one statement per part of the finishes (one part for a batch
    up to ``ROWS_PER_STATEMENT``, the writer's default batch included), each in autocommit,
    its own transaction: a batch of results is one round trip.

    Deferrals commit together with the first part, in one transaction, as before: committed
    alone, a deferral whose batch then failed would be written again by the writer's retry,
    and by then the reconciler may have handed the row back to this worker (same claim token)
    for a new call, which the repeated deferral would take from under it."""
    finished: list[JobEnding] = []
    rest = _parts(finishes)
    if deferrals:
        first, rest = (rest[0] if rest else []), rest[1:]
        with engine.begin() as conn:
            for deferred in _parts(deferrals):
                defer_rows(conn, deferred)
            if first:
                finished.extend(finish_and_count(conn, first, now))
    if rest:
        with without_transaction(engine) as conn:
            for part in rest:
                finished.extend(finish_and_count(conn, part, now))
    return finished


def _parts(items: list[Outcome]) -> list[list[Outcome]]:
    return [items[i : i + ROWS_PER_STATEMENT] for i in range(0, len(items), ROWS_PER_STATEMENT)]


_AT = bindparam("f_now", type_=_J.c.completed_at.type)
_FINALIZE = (
    update(_J)
    .where(_J.c.id == bindparam("f_job"), _J.c.status.in_(_ACTIVE), _J.c.total <= _DONE)
    .values(status=case(
                (_J.c.status == JobStatus.CANCELLING, JobStatus.CANCELLED.value),
                (_J.c.expired > 0, JobStatus.EXPIRED.value),
                (and_(_J.c.total > 0, _J.c.failed >= _J.c.total), JobStatus.FAILED.value),
                else_=JobStatus.COMPLETED.value),
            completed_at=_AT, finalizing_at=func.coalesce(_J.c.finalizing_at, _AT))
    .returning(*EVENT_COLUMNS)
)
"""Built once; RETURNING only the columns the job's event reads."""


def finalize_job(conn: Connection, job_id: str, now: datetime) -> JobEnding | None:
    """End the job if every request is terminal; its ending, once, else None.

    The ending is cancelled (it was cancelling), expired (some requests ran out of the
    completion window), failed (every request failed) or completed. The job's terminal event
    (the webhook outbox) is inserted here, in the caller's transaction: the UPDATE moves a job
    out of an active status once, so the event exists exactly once, whoever finishes the job.
    """
    row = conn.execute(_FINALIZE, {"f_job": job_id, "f_now": now}).first()
    if row is None:
        return None
    add_job_event(conn, row, TERMINAL_EVENTS[JobStatus(row.status)], now)
    return job_ending(row)


def select_runnable_seqs(conn: Connection, job_id: str) -> list[int]:
    """Every queued or deferred seq of a job, for re-publishing."""
    return list(conn.execute(
        select(_T.c.seq).where(
            _T.c.job_id == job_id, state_in(RequestState.QUEUED, RequestState.DEFERRED),
        ).order_by(_T.c.seq)
    ).scalars())
