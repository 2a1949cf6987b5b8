"""Batched, conditional row updates: many outcomes in one statement, one JSON parameter.

Why not one UPDATE per outcome: on PostgreSQL every statement is a round trip plus parse and
plan, and a worker writes a thousand outcomes a second. Why not SQLAlchemy's ``values()``: a
VALUES list of N rows is a new statement for every N, so it is compiled afresh each time (it
cost more CPU than the writes it saved). Here the SQL text is fixed per dialect (compiled and
prepared once); the rows travel as one JSON array of arrays, which the database unpacks with
``jsonb_array_elements`` (PostgreSQL) or ``json_each`` (SQLite 3.33+, UPDATE ... FROM).

Every statement keeps its guard (a terminal row is never rewritten; a deferral needs the
worker's claim), and RETURNING names the rows that really moved, so only those are charged.

On PostgreSQL ``finish_and_count`` goes further: the rows' UPDATE, their jobs' counters, the
end of every job they complete and those jobs' events are one statement (data-modifying
CTEs), where SQLite takes several.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from types import SimpleNamespace
from typing import Any

from psycopg import AsyncConnection
from sqlalchemy import Connection, DateTime, TextClause, TextualSelect, bindparam, text
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from schemas.jobs import (
    ACTIVE_JOB_STATUSES,
    TERMINAL_REQUEST_STATES,
    JobEnding,
    JobStatus,
    RequestState,
)
from schemas.outcomes import Outcome
from schemas.webhooks import TERMINAL_EVENTS, DeliveryState
from storage.events import job_ending, new_event_id
from storage.models import JOBS
from storage.money import from_pico, to_pico

__all__ = ["defer_rows", "finish_and_count", "finish_and_count_async", "finish_rows", "json_rows"]

_TERMINAL = ", ".join(f"'{s.value}'" for s in TERMINAL_REQUEST_STATES)
_ACTIVE = ", ".join(f"'{s.value}'" for s in sorted(ACTIVE_JOB_STATUSES))

# (column, PostgreSQL type) in the order of the JSON arrays; job_id and seq come first.
_KEY = (("job_id", "text"), ("seq", "integer"))
_FINISH = (("state", "text"), ("deployment", "text"), ("provider", "text"),
           ("status_code", "integer"), ("upstream_request_id", "text"), ("response", "text"),
           ("error_code", "text"), ("error_message", "text"), ("prompt_tokens", "integer"),
           ("completion_tokens", "integer"), ("cached_tokens", "integer"), ("cost", "bigint"),
           ("latency_ms", "double precision"), ("route", "text"))
_DEFER = (("claim", "text"), ("not_before", "double precision"), ("deployment", "text"),
          ("provider", "text"), ("status_code", "integer"), ("error_code", "text"),
          ("error_message", "text"), ("route", "text"))
_REFUND = (("refund", "integer"),)
"""1 for a throttled deferral (our own limits): the attempt its claim counted is given back."""
_ENDING = ("id", "status", "succeeded", "failed", "cancelled", "expired", "prompt_tokens",
           "completion_tokens", "cost", "started_at", "finalizing_at", "completed_at")
"""The jobs columns of a ``JobEnding``."""
_ENDING_COLUMNS = ", ".join(f"jobs.{name}" for name in _ENDING)


def _source(dialect: str, fields: Sequence[tuple[str, str]]) -> str:
    """A subquery ``v`` with one typed column per field, read from the JSON parameter."""
    if dialect == "postgresql":
        cols = ", ".join(f"(x->>{i})::{pg} AS {name}" for i, (name, pg) in enumerate(fields))
        return f"(SELECT {cols} FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r(x)) AS v"
    cols = ", ".join(f"json_extract(value, '$[{i}]') AS {name}"
                     for i, (name, _) in enumerate(fields))
    return f"(SELECT {cols} FROM json_each(:rows)) AS v"


def _returning(dialect: str) -> str:
    # SQLite resolves RETURNING names against the updated table only.
    return "job_id, seq" if dialect == "sqlite" else "requests.job_id, requests.seq"


@cache
def _finish_sql(dialect: str) -> TextClause:
    sets = ", ".join(f"{name} = v.{name}" for name, _ in _FINISH)
    sql = (
        f"UPDATE requests SET {sets}, claim = NULL, lease_until = NULL, not_before = NULL, "
        f"finished_at = :now FROM {_source(dialect, _KEY + _FINISH)} "
        f"WHERE requests.job_id = v.job_id AND requests.seq = v.seq "
        f"AND requests.state NOT IN ({_TERMINAL}) RETURNING {_returning(dialect)}"
    )
    return text(sql).bindparams(bindparam("now", type_=DateTime(timezone=True)))


@cache
def _finish_count_sql() -> TextualSelect:
    """PostgreSQL: finish the rows, add them to their jobs' counters, end the jobs they
    complete and write each ended job's event (and its webhook delivery); RETURNING the
    endings of the jobs this statement ended (``JobEnding``: the final row's status,
    counters and times).

    - ``moved``: the rows' UPDATE, guarded as in ``finish_rows``; only rows it moves count.
    - ``d``: their sums per job. Aggregating reads every moved row, so the rows are locked
      before any job row: the lock order of every writer (request rows, then jobs).
    - ``was``: locks the jobs in id order and reads their status as locked (a locking read
      returns the newest committed version under READ COMMITTED, not the statement's
      snapshot), so the statement knows which jobs it moved out of an active status.
      RETURNING gives only the new values on PostgreSQL before 18. FOR NO KEY UPDATE is the
      lock a plain UPDATE takes: it does not wait for a foreign key's check of the job (FOR
      KEY SHARE, taken by inserting an event for it), as FOR UPDATE would.
    - ``counted``: the counters, and the ending of ``finalize_job`` in the same UPDATE, with
      the same choice of status (cancelled, expired, failed, completed).
    - ``ended``: the jobs it moved out of an active status; ``ev`` inserts their terminal
      events (the ids chosen by the caller, one per job; the payload JSON ``null``: the
      data is the job's final row, built when the event is read, see
      ``storage.events.event_data``), and ``dl`` a due delivery for each one whose job has a
      webhook URL. So the write is one statement, one round trip, in autocommit.
    """
    sets = ", ".join(f"{name} = v.{name}" for name, _ in _FINISH)
    ending = ", ".join(_ENDING)
    failed = "jobs.failed + d.n_bad"
    done = f"jobs.succeeded + d.n_ok + {failed} + jobs.cancelled + jobs.expired"
    ends = f"jobs.status IN ({_ACTIVE}) AND jobs.total <= {done}"
    status = (f"CASE WHEN jobs.status = '{JobStatus.CANCELLING.value}' "
              f"THEN '{JobStatus.CANCELLED.value}' "
              f"WHEN jobs.expired > 0 THEN '{JobStatus.EXPIRED.value}' "
              f"WHEN jobs.total > 0 AND {failed} >= jobs.total THEN '{JobStatus.FAILED.value}' "
              f"ELSE '{JobStatus.COMPLETED.value}' END")
    kind = " ".join(f"WHEN '{job.value}' THEN '{event.value}'"
                    for job, event in TERMINAL_EVENTS.items())
    sql = (
        f"WITH moved AS (UPDATE requests SET {sets}, claim = NULL, lease_until = NULL, "
        f"not_before = NULL, finished_at = :now FROM {_source('postgresql', _KEY + _FINISH)} "
        f"WHERE requests.job_id = v.job_id AND requests.seq = v.seq "
        f"AND requests.state NOT IN ({_TERMINAL}) "
        f"RETURNING requests.job_id, requests.state, requests.prompt_tokens, "
        f"requests.completion_tokens, requests.cost), "
        f"d AS (SELECT job_id, "
        f"count(*) FILTER (WHERE state = '{RequestState.SUCCEEDED.value}') AS n_ok, "
        f"count(*) FILTER (WHERE state <> '{RequestState.SUCCEEDED.value}') AS n_bad, "
        f"sum(prompt_tokens) AS n_in, sum(completion_tokens) AS n_out, "
        f"sum(cost)::bigint AS n_cost FROM moved GROUP BY job_id), "
        f"was AS MATERIALIZED (SELECT jobs.id, jobs.status FROM jobs JOIN d ON d.job_id = jobs.id "
        f"ORDER BY jobs.id FOR NO KEY UPDATE OF jobs), "
        f"counted AS (UPDATE jobs SET succeeded = jobs.succeeded + d.n_ok, failed = {failed}, "
        f"prompt_tokens = jobs.prompt_tokens + d.n_in, "
        f"completion_tokens = jobs.completion_tokens + d.n_out, cost = jobs.cost + d.n_cost, "
        f"status = CASE WHEN {ends} THEN {status} ELSE jobs.status END, "
        f"completed_at = CASE WHEN {ends} THEN :now ELSE jobs.completed_at END, "
        f"finalizing_at = CASE WHEN {ends} THEN coalesce(jobs.finalizing_at, :now) "
        f"ELSE jobs.finalizing_at END "
        f"FROM d, was WHERE jobs.id = d.job_id AND was.id = jobs.id "
        f"RETURNING {_ENDING_COLUMNS}, jobs.webhook_url, was.status AS was_status), "
        f"ended AS (SELECT {ending}, webhook_url FROM counted "
        f"WHERE was_status IN ({_ACTIVE}) AND status NOT IN ({_ACTIVE})), "
        f"ev AS (INSERT INTO events (id, job_id, type, payload, created_at) "
        f"SELECT CAST(:events AS jsonb) ->> ended.id, ended.id, CASE ended.status {kind} END, "
        f"'null'::json, :now FROM ended RETURNING id, job_id), "
        f"dl AS (INSERT INTO deliveries (event_id, url, state, attempts, next_attempt_at, "
        f"created_at) SELECT ev.id, ended.webhook_url, '{DeliveryState.PENDING.value}', 0, "
        f":epoch, :now FROM ev JOIN ended ON ended.id = ev.job_id "
        f"WHERE ended.webhook_url IS NOT NULL) "
        f"SELECT {ending} FROM ended ORDER BY id"
    )
    return (text(sql).bindparams(bindparam("now", type_=DateTime(timezone=True)))
            .columns(*(JOBS.c[name] for name in _ENDING)))


@cache
def _finish_count_psycopg() -> str:
    """``_finish_count_sql`` as psycopg's own SQL text (``%(name)s`` parameters), for an
    async connection of psycopg's outside SQLAlchemy's pool."""
    return str(_finish_count_sql().compile(dialect=PGDialect_psycopg()))


@cache
def _defer_sql(dialect: str) -> TextClause:
    sets = ", ".join(f"{name} = v.{name}" for name, _ in _DEFER[1:])
    sql = (
        f"UPDATE requests SET state = '{RequestState.DEFERRED.value}', claim = NULL, "
        f"lease_until = NULL, {sets}, attempts = requests.attempts - v.refund "
        f"FROM {_source(dialect, _KEY + _DEFER + _REFUND)} "
        f"WHERE requests.job_id = v.job_id AND requests.seq = v.seq "
        f"AND requests.state = '{RequestState.RUNNING.value}' AND requests.claim = v.claim"
    )
    return text(sql)


def json_rows(rows: list[tuple[Any, ...]]) -> str:
    """Rows as the one JSON parameter these statements unpack (arrays, compact, UTF-8)."""
    return json.dumps(rows, separators=(",", ":"), ensure_ascii=False)


def _finished(part: Sequence[Outcome]) -> str:
    return json_rows([
        (o.job_id, o.seq, o.kind.value, o.deployment, o.provider, o.status_code,
         o.upstream_request_id, o.response, o.error_code, o.error_message,
         o.usage.prompt_tokens, o.usage.completion_tokens, o.usage.cached_tokens,
         to_pico(o.cost), o.latency_ms, o.route)
        for o in part
    ])


def finish_rows(conn: Connection, part: Sequence[Outcome], now: datetime
                ) -> list[tuple[str, int]]:
    """Move rows to their terminal state unless they are there already; the rows moved.

    ``part`` holds at most one outcome per row (the caller keeps the first).
    """
    stmt = _finish_sql(conn.dialect.name)
    return [(r[0], int(r[1])) for r in conn.execute(stmt, {"rows": _finished(part), "now": now})]


def finish_and_count(conn: Connection, part: Sequence[Outcome], now: datetime
                     ) -> list[JobEnding]:
    """PostgreSQL: ``finish_rows``, the moved rows counted into their jobs, every job they
    complete ended, and each ended job's event and webhook delivery written, in one
    statement; the endings of the jobs it ended, by id.

    ``part`` holds at most one outcome per row. One statement is its own transaction: run
    it in autocommit (``storage.db.without_transaction``).
    """
    rows = conn.execute(_finish_count_sql(), _finish_count_params(part, now)).all()
    return [job_ending(r) for r in rows]


async def finish_and_count_async(conn: AsyncConnection[Any], part: Sequence[Outcome],
                                 now: datetime) -> list[JobEnding]:
    """``finish_and_count`` on psycopg's async connection, which must be in autocommit: the
    same statement, its result read as SQLAlchemy would (the cost from picodollars)."""
    cur = await conn.execute(_finish_count_psycopg(), _finish_count_params(part, now))
    endings = []
    for row in await cur.fetchall():
        job = SimpleNamespace(**dict(zip(_ENDING, row, strict=True)))
        job.cost = from_pico(job.cost)
        endings.append(job_ending(job))
    return endings


def _finish_count_params(part: Sequence[Outcome], now: datetime) -> dict[str, Any]:
    """The parameters of ``_finish_count_sql``: the rows, the time, and a new event id for
    each of their jobs (used for the jobs the statement ends)."""
    events = {job_id: new_event_id() for job_id in {o.job_id for o in part}}
    return {"rows": _finished(part), "now": now, "epoch": now.timestamp(),
            "events": json.dumps(events)}


def defer_rows(conn: Connection, part: Sequence[Outcome]) -> None:
    """Put rows back to wait for ``not_before``, where this worker's claim still holds them."""
    rows = [
        (o.job_id, o.seq, o.claim, o.not_before, o.deployment, o.provider, o.status_code,
         o.error_code, o.error_message, o.route, int(o.throttled))
        for o in part
    ]
    conn.execute(_defer_sql(conn.dialect.name), {"rows": json_rows(rows)})
