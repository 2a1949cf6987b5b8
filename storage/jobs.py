"""Jobs in SQL: create one atomically, read its view, cancel or expire it, page its results.

Stopping a job (cancel, or its completion window running out) ends its waiting requests at
once (``batch_cancelled`` / ``batch_expired``) and lets the running ones finish and count;
``finalize_job`` then ends the job when the last of them is recorded. The reconciler calls
``settle_stopping`` every pass to catch what raced the stop: a retry scheduled by a call that
was running when the job stopped, or a lease that lapsed because its worker died.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Engine, Select, bindparam, func, insert, select, text, update

from schemas.batch import BatchError, BatchOutputLine, BatchResponse
from schemas.errors import NotFoundError
from schemas.jobs import (
    TERMINAL_JOB_STATUSES,
    JobEnding,
    JobOptions,
    JobStatus,
    JobView,
    RequestState,
)
from schemas.keys import Tier
from schemas.tenants import BUDGET_PAUSED, DEFAULT_TENANT
from storage.batched import json_rows
from storage.db import lazy_commit, without_transaction
from storage.direct import ThreadConnections, for_psycopg
from storage.models import JOBS, REQUESTS, state_in, state_is
from storage.requests import finalize_job
from storage.tenants import AccessCheck, StaleAccessError, access_holds

__all__ = [
    "NewJob",
    "NewRequest",
    "cancel_job",
    "create_job",
    "expire_jobs",
    "get_job",
    "iter_results",
    "mark_dispatched",
    "settle_stopping",
]

_T = REQUESTS
_J = JOBS
_LIVE = [RequestState.QUEUED.value, RequestState.DEFERRED.value, RequestState.RUNNING.value]
_STOPPED = {
    RequestState.CANCELLED: ("batch_cancelled", "the job was cancelled before this request ran"),
    RequestState.EXPIRED: ("batch_expired",
                           "the job's completion window ended before this request ran"),
}

NewRequest = tuple[str, str, str]
"""(custom_id, model, body JSON) of one request to insert."""


@dataclass(frozen=True)
class NewJob:
    """The fields of a job that a producer chooses."""

    id: str
    tier: Tier
    options: JobOptions = field(default_factory=JobOptions)
    input_name: str = ""
    tenant_id: str = DEFAULT_TENANT
    api_key_id: str | None = None


def create_job(engine: Engine, job: NewJob, rows: Iterable[NewRequest], *, batch: int,  # noqa: PLR0913
               check: Callable[[Connection | None], None], check_reads: bool = True,
               still: AccessCheck | None = None, direct: ThreadConnections | None = None
               ) -> int:
    """Insert a job and all its requests in one transaction; return the count.

    ``rows`` may be a lazy parser: its rows are inserted in batches as they come. After the
    last row (and the job's ``total``), ``check`` runs, given the transaction's connection,
    and may raise (the parser found bad lines, a queue limit): the transaction then rolls
    back and nothing is left behind.

    ``check_reads=False`` says ``check`` reads nothing in the database (no queue limit to
    count). A job whose rows all fit one batch is then checked first and, on PostgreSQL,
    written as one statement without BEGIN and COMMIT: one round trip where there were four
    (a realtime request's submit). Given ``direct``, that statement runs on the calling
    thread's own connection, not through the engine (storage/direct.py: 0.7 ms less of the
    client's CPU here), and ``check`` is given no connection (None): it reads nothing.

    ``still`` (PostgreSQL): the tenant's and key's rows the caller's access was read from, as
    read. They are checked in the job's transaction (in its one statement, when it is one) and
    ``StaleAccessError`` is raised, nothing written, if they changed: the caller validated the
    input against that access without reading it again.
    """
    now = datetime.now(UTC)
    opts = job.options
    window = opts.window()
    values = dict(
        id=job.id, tenant_id=job.tenant_id, api_key_id=job.api_key_id, tier=job.tier.value,
        succeeded=0, failed=0, cancelled=0, expired=0, prompt_tokens=0, completion_tokens=0,
        cost=0, metadata=opts.metadata, input_name=job.input_name, created_at=now,
        webhook_url=opts.webhook_url, completion_window=opts.completion_window,
        expires_at=None if window is None else now + window,
        routing=None if opts.routing is None else opts.routing.model_dump())
    rows = iter(rows)
    first = _numbered(job.id, itertools.islice(rows, batch), 0)
    if not check_reads and 0 < len(first) < batch and engine.dialect.name == "postgresql":
        statement = _job_with_rows(tuple(values), still is not None)
        params = {
            **{f"j_{k}": v for k, v in values.items()}, "j_status": JobStatus.IN_PROGRESS,
            "j_total": len(first),
            "j_rows": json_rows([(r["seq"], r["custom_id"], r["model"], r["body"])
                                 for r in first]),
            **(still.params() if still is not None else {})}
        if direct is not None and direct.ready():
            check(None)  # the whole input was read: its problems are known
            written = direct.rows(for_psycopg(statement), params)[0][0]
        else:
            with without_transaction(engine) as conn:
                check(conn)
                written = conn.execute(statement, params).scalar()
        if not written:
            raise StaleAccessError(f"the access of tenant {job.tenant_id!r} changed")
        return len(first)
    with engine.begin() as conn:
        if still is not None and not conn.execute(_ACCESS_HOLDS, still.params()).scalar():
            raise StaleAccessError(f"the access of tenant {job.tenant_id!r} changed")
        if len(first) < batch:  # the whole input at hand: the job is written whole at once
            conn.execute(_INSERT_JOB, {**values, "status": JobStatus.IN_PROGRESS,
                                       "total": len(first)})
            if first:
                _insert_requests(conn, first)
            check(conn)
            return len(first)
        conn.execute(_INSERT_JOB, {**values, "status": JobStatus.VALIDATING, "total": 0})
        total = 0
        pending = first
        while pending:
            _insert_requests(conn, pending)
            total += len(pending)
            pending = _numbered(job.id, itertools.islice(rows, batch), total)
        # the total first: a queue check counts unfinished requests from the jobs' counters
        conn.execute(update(_J).where(_J.c.id == job.id)
                     .values(status=JobStatus.IN_PROGRESS, total=total))
        check(conn)
    return total


def _numbered(job_id: str, rows: Iterable[NewRequest], start: int) -> list[dict[str, Any]]:
    return [{"job_id": job_id, "seq": seq, "custom_id": custom_id, "model": model, "body": body}
            for seq, (custom_id, model, body) in enumerate(rows, start)]


_QUEUED_ROW = {"state": RequestState.QUEUED.value, "attempts": 0, "prompt_tokens": 0,
               "completion_tokens": 0, "cached_tokens": 0, "cost": 0}

# Built once, their values passed as parameters: a statement built per call with its values in
# it is traversed again for SQLAlchemy's cache key each time, which cost a one-row submit about
# as much CPU as the round trips (docs/PERFORMANCE.md, "Session 7").
_INSERT_JOB = insert(_J)
_INSERT_ROWS = insert(_T).values(**_QUEUED_ROW)
_DISPATCHED = (update(_J).where(_J.c.id == bindparam("d_job"))
               .values(dispatched_at=bindparam("d_at")))


_ACCESS_HOLDS = select(access_holds())


@cache
def _job_with_rows(keys: tuple[str, ...], guarded: bool) -> Select[int]:
    """PostgreSQL: a job's row and its requests' rows in one statement, which returns how
    many jobs it wrote (1, or 0 when the guard failed). Both INSERTs are data-modifying CTEs;
    the rows come as one JSON parameter of ``[seq, custom_id, model, body]`` arrays (see
    storage/batched.py for why JSON rather than a VALUES list), read joined to the new job.

    ``guarded``: the job is inserted only if ``access_holds`` (bound from an
    ``AccessCheck``), and so its rows: nothing is written when the access changed. (Counted
    by a SELECT: the driver's rowcount of an INSERT whose CTE returns rows is -1.)
    """
    names = (*keys, "status", "total")
    values = select(*(bindparam(f"j_{k}", type_=_J.c[k].type).label(k) for k in names))
    if guarded:
        values = values.where(access_holds())
    new_job = (insert(_J).from_select([_J.c[k] for k in names], values)
               .returning(_J.c.id).cte("new_job"))
    columns = [_T.c[name] for name in ("job_id", "seq", "custom_id", "model", "body",
                                       *_QUEUED_ROW)]
    fixed = ", ".join(f"{value!r} AS {name}" if isinstance(value, str) else f"{value} AS {name}"
                      for name, value in _QUEUED_ROW.items())
    lines = text(
        "SELECT CAST(:j_id AS varchar) AS job_id, (x->>0)::integer AS seq, x->>1 AS custom_id, "
        f"x->>2 AS model, x->>3 AS body, {fixed} "
        "FROM new_job, json_array_elements(CAST(:j_rows AS json)) AS r(x)"
    ).columns(*columns)
    new_rows = insert(_T).from_select(columns, lines).cte("new_rows")
    # the jobs written (1 or 0): a data-modifying CTE runs whether or not it is read
    return select(func.count()).select_from(new_job).add_cte(new_job, new_rows)


COPY_MIN_ROWS = 64
"""Fewer rows go in one multi-row INSERT: COPY costs an extra round trip to set up."""


def _insert_requests(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if conn.dialect.name == "postgresql" and len(rows) >= COPY_MIN_ROWS:
        _copy_requests(conn, rows)
        return
    conn.execute(_INSERT_ROWS, rows)


def _copy_requests(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """PostgreSQL's COPY, in the same transaction: ~4x the rate of batched INSERTs."""
    columns = ", ".join([*rows[0], *_QUEUED_ROW])
    fixed = tuple(_QUEUED_ROW.values())
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {_T.name} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row((*row.values(), *fixed))


def mark_dispatched(engine: Engine, job_id: str) -> None:
    """Note that every chunk of the job was published: one statement, on PostgreSQL without
    BEGIN and COMMIT around it (one round trip where there were three)."""
    with without_transaction(engine) as conn:
        conn.execute(_DISPATCHED, {"d_job": job_id, "d_at": datetime.now(UTC)})
        conn.commit()  # SQLite's transaction; PostgreSQL's statement committed on its own


def _owned(job_id: str, tenant: str | None) -> Any:
    """The WHERE clause for one job, seen by ``tenant`` (None: internal callers, unscoped).
    Another tenant's job matches nothing, so it is as absent as a job that never existed."""
    clause = _J.c.id == job_id
    return clause if tenant is None else clause & (_J.c.tenant_id == tenant)


def _count_of(state: RequestState) -> Any:
    """A scalar subquery: the ``g_job`` job's rows in ``state`` (read from
    ix_requests_job_live)."""
    return (select(func.count()).select_from(_T)
            .where(_T.c.job_id == bindparam("g_job"), state_is(state)).scalar_subquery())


# The status read, built once (see _INSERT_JOB): every poll of every ``wait`` runs it.
_STATUS = select(_J, _count_of(RequestState.RUNNING).label("n_running"),
                 _count_of(RequestState.DEFERRED).label("n_deferred")
                 ).where(_J.c.id == bindparam("g_job"))
_STATUS_OF = _STATUS.where(_J.c.tenant_id == bindparam("g_tenant"))
_DISPATCHED_STATUS = {  # PostgreSQL: the job marked dispatched, and read, in one statement
    # whose commit is not waited for: a lost mark only publishes the job again (lazy_commit)
    status: status.add_cte(_DISPATCHED.cte("dispatched")).add_columns(lazy_commit())
    for status in (_STATUS, _STATUS_OF)}
_PAUSED = select(_T.c.error_message).where(
    _T.c.job_id == bindparam("g_job"), state_is(RequestState.DEFERRED),
    _T.c.error_code == BUDGET_PAUSED).limit(1)


def get_job(engine: Engine, job_id: str, *, tenant: str | None = None,
            dispatched: bool = False, direct: ThreadConnections | None = None) -> JobView:
    """The job's status, counts per state, tokens and cost; NotFoundError when absent (or,
    given ``tenant``, owned by another tenant).

    ``dispatched``: first note that every chunk of the job was published (``mark_dispatched``),
    on PostgreSQL in the same statement (a data-modifying CTE; the read is of the statement's
    snapshot, which is all a view shows).

    Its cost does not grow with the job: the terminal counts are the job row's counters
    (moved in the same transactions as the rows), running and deferred rows are counted
    (a few thousand at most: the calls in flight and the retries waiting), and the queued
    ones are the rest of ``total``. Counting queued rows too read every waiting row of the
    job on each call: about 10 ms of PostgreSQL's CPU for 20,000 of them, at every poll of
    every ``wait``. One statement, so the counters and the counts are of one snapshot.

    ``direct`` (PostgreSQL): the statements run on the calling thread's own connection
    (storage/direct.py: a status read took 0.19 ms where the engine took 0.30, and half the
    client's CPU, 0.115 ms against 0.24).
    """
    params = {"g_job": job_id, "g_tenant": tenant, "d_job": job_id, "d_at": datetime.now(UTC)}
    status = _STATUS if tenant is None else _STATUS_OF
    paused = None
    if direct is not None and direct.ready():
        found = direct.rows(for_psycopg(_DISPATCHED_STATUS[status] if dispatched else status),
                            params)
        job = found[0] if found else None
        if job is not None and job.n_deferred:
            paused = next(iter(direct.rows(for_psycopg(_PAUSED), params)), (None,))[0]
    else:
        with without_transaction(engine) as conn:
            if dispatched and engine.dialect.name == "postgresql":
                status = _DISPATCHED_STATUS[status]
            elif dispatched:
                conn.execute(_DISPATCHED, params)
            job = conn.execute(status, params).first()
            if job is not None and job.n_deferred:
                paused = conn.execute(_PAUSED, params).scalar()
            if dispatched:
                conn.commit()  # SQLite's transaction; PostgreSQL's statement committed alone
    if job is None:
        raise NotFoundError(f"no job {job_id!r}")
    queued = (job.total - job.succeeded - job.failed - job.cancelled - job.expired
              - job.n_running - job.n_deferred)
    live = {RequestState.QUEUED: queued, RequestState.DEFERRED: job.n_deferred,
            RequestState.RUNNING: job.n_running}
    counts = {state: int(n) for state, n in live.items() if n > 0}
    counts.update({
        RequestState.SUCCEEDED: job.succeeded, RequestState.FAILED: job.failed,
        RequestState.CANCELLED: job.cancelled, RequestState.EXPIRED: job.expired,
    })
    return JobView(
        id=job.id, tenant_id=job.tenant_id, status=JobStatus(job.status), tier=Tier(job.tier),
        total=job.total,
        counts=counts, prompt_tokens=job.prompt_tokens,
        completion_tokens=job.completion_tokens, cost=job.cost, metadata=job.metadata or {},
        webhook_url=job.webhook_url, completion_window=job.completion_window,
        expires_at=_utc(job.expires_at),
        created_at=_utc(job.created_at), started_at=_utc(job.started_at),
        finalizing_at=_utc(job.finalizing_at), completed_at=_utc(job.completed_at),
        eta_seconds=_eta(job, datetime.now(UTC)), paused=paused,
    )


def _eta(job: Any, now: datetime) -> float | None:
    """Seconds to finish the rest at the rate requests ran since the job started."""
    started = _utc(job.started_at)
    processed = job.succeeded + job.failed
    left = job.total - processed - job.cancelled - job.expired
    if JobStatus(job.status) in TERMINAL_JOB_STATUSES or started is None or processed == 0:
        return None
    elapsed = max((now - started).total_seconds(), 0.0)
    return round(float(max(left, 0) * elapsed / processed), 1)


def cancel_job(engine: Engine, job_id: str, *, tenant: str | None = None) -> JobEnding | None:
    """Stop dispatching: waiting requests end ``cancelled``; running ones finish and count.
    The job's ending when the cancel ended it (nothing was running), else None."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        _lock_waiting(conn, job_id)
        moved = conn.execute(
            update(_J).where(_owned(job_id, tenant), _J.c.status == JobStatus.IN_PROGRESS)
            .values(status=JobStatus.CANCELLING, finalizing_at=now).returning(_J.c.id)
        ).first()
        if moved is None:
            if conn.execute(select(_J.c.id).where(_owned(job_id, tenant))).first() is None:
                raise NotFoundError(f"no job {job_id!r}")
            return None  # already finished or stopping: nothing more to do
        _end_waiting(conn, job_id, RequestState.CANCELLED, now)
        return finalize_job(conn, job_id, now)


_Ended = Callable[[list[JobEnding]], None]
"""``on_ended``: told the endings of the jobs a call ended, after each commit that ended one
(the reconciler announces them to waiters: producers/endings.py)."""


def expire_jobs(engine: Engine, now: datetime, limit: int = 100, *,
                on_ended: _Ended | None = None) -> int:
    """Jobs past their completion window stop: waiting requests end ``expired``, running ones
    finish, and the job ends ``expired`` after them. The number of requests expired."""
    with engine.connect() as conn:
        due = list(conn.execute(
            select(_J.c.id).where(_J.c.status == JobStatus.IN_PROGRESS, _J.c.expires_at <= now)
            .order_by(_J.c.expires_at).limit(limit)).scalars())
    expired = 0
    for job_id in due:
        with engine.begin() as conn:
            _lock_waiting(conn, job_id)
            moved = conn.execute(
                update(_J).where(_J.c.id == job_id, _J.c.status == JobStatus.IN_PROGRESS)
                .values(status=JobStatus.FINALIZING, finalizing_at=now).returning(_J.c.id)
            ).first()
            ending = None
            if moved is not None:
                expired += _end_waiting(conn, job_id, RequestState.EXPIRED, now)
                ending = finalize_job(conn, job_id, now)
        if ending is not None and on_ended is not None:
            on_ended([ending])
    return expired


def settle_stopping(engine: Engine, now: datetime, limit: int = 1000, *,
                    on_ended: _Ended | None = None) -> int:
    """End what raced a stop in cancelling and expiring jobs, and finish those jobs when
    nothing runs any more; the number of requests ended."""
    with engine.connect() as conn:
        jobs = conn.execute(
            select(_J.c.id, _J.c.status)
            .where(_J.c.status.in_([JobStatus.CANCELLING, JobStatus.FINALIZING]))
            .order_by(_J.c.id).limit(limit)).all()
    ended = 0
    for job_id, status in jobs:
        state = (RequestState.CANCELLED if status == JobStatus.CANCELLING
                 else RequestState.EXPIRED)
        with engine.begin() as conn:
            ended += _end_waiting(conn, job_id, state, now, lapsed_before=now.timestamp())
            ending = finalize_job(conn, job_id, now)
        if ending is not None and on_ended is not None:
            on_ended([ending])
    return ended


def _lock_waiting(conn: Connection, job_id: str) -> None:
    """PostgreSQL: lock a job's waiting rows before the job is stopped. Every writer locks
    request rows before job rows (see ``storage.requests.record``): a write finishing one of
    these rows (a deferred row's late answer) holds it and then waits for the job, so a stop
    that locked the job first and then waited for that row would deadlock with it. SQLite has
    one writer at a time. One row comes back, whatever the number locked."""
    if conn.dialect.name != "postgresql":
        return
    waiting = (select(_T.c.seq).where(_T.c.job_id == job_id,
                                      state_in(RequestState.QUEUED, RequestState.DEFERRED))
               .order_by(_T.c.seq).with_for_update().subquery())
    conn.execute(select(func.count()).select_from(waiting))


def _end_waiting(conn: Connection, job_id: str, state: RequestState, now: datetime, *,
                 lapsed_before: float | None = None) -> int:
    """End a stopped job's waiting requests (and, given ``lapsed_before``, running ones whose
    lease ran out) in ``state``, counted into the job; how many."""
    which: Any = state_in(RequestState.QUEUED, RequestState.DEFERRED)
    if lapsed_before is not None:
        which = which | (state_is(RequestState.RUNNING)
                         & (_T.c.lease_until < lapsed_before))
    code, message = _STOPPED[state]
    n = conn.execute(
        update(_T).where(_T.c.job_id == job_id, which)
        .values(state=state.value, error_code=code, error_message=message, claim=None,
                lease_until=None, not_before=None, finished_at=now)
    ).rowcount
    if n:
        column = _J.c.cancelled if state is RequestState.CANCELLED else _J.c.expired
        conn.execute(update(_J).where(_J.c.id == job_id).values({column.key: column + n}))
    return int(n)


def iter_results(engine: Engine, job_id: str, *, order: str = "input", page: int = 1000,
                 tenant: str | None = None) -> Iterator[BatchOutputLine]:
    """Every terminal request as an OpenAI Batch output line, in pages (bounded memory)."""
    if order not in ("input", "completion"):
        raise ValueError("order must be 'input' or 'completion'")
    get_job(engine, job_id, tenant=tenant)  # NotFoundError for an unknown (or foreign) job
    after: tuple[Any, ...] | None = None
    keys = (_T.c.seq,) if order == "input" else (_T.c.finished_at, _T.c.seq)
    ended: Any = _T.c.state.not_in(_LIVE)
    if order == "completion":  # every ended row has its finished_at: the partial index's rows
        ended = ended & _T.c.finished_at.is_not(None)
    while True:
        stmt = select(_T).where(_T.c.job_id == job_id, ended)
        if after is not None:
            stmt = stmt.where(_tuple_gt(keys, after))
        with engine.connect() as conn:
            rows = conn.execute(stmt.order_by(*keys).limit(page)).all()
        for row in rows:
            yield _output_line(row)
        if len(rows) < page:
            return
        last = rows[-1]
        after = (last.seq,) if order == "input" else (last.finished_at, last.seq)


def _tuple_gt(keys: tuple[Any, ...], after: tuple[Any, ...]) -> Any:
    if len(keys) == 1:
        return keys[0] > after[0]
    return (keys[0] > after[0]) | ((keys[0] == after[0]) & (keys[1] > after[1]))


def _output_line(row: Any) -> BatchOutputLine:
    line_id = f"batch_req_{row.job_id.removeprefix('batch_')}_{row.seq}"
    if row.state == RequestState.SUCCEEDED:
        return BatchOutputLine(
            id=line_id, custom_id=row.custom_id,
            response=BatchResponse(status_code=row.status_code or 200,
                                   request_id=row.upstream_request_id or "",
                                   body=json.loads(row.response or "{}")),
        )
    return BatchOutputLine(
        id=line_id, custom_id=row.custom_id,
        error=BatchError(code=row.error_code or row.state, message=row.error_message or ""),
    )


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
