"""Batched, conditional row updates: many outcomes in one statement, one JSON parameter.

Why not one UPDATE per outcome: on PostgreSQL every statement is a round trip plus parse and
plan, and a worker writes a thousand outcomes a second. Why not SQLAlchemy's ``values()``: a
VALUES list of N rows is a new statement for every N, so it is compiled afresh each time (it
cost more CPU than the writes it saved). Here the SQL text is fixed per dialect (compiled and
prepared once); the rows travel as one JSON array of arrays, which the database unpacks with
``jsonb_array_elements`` (PostgreSQL) or ``json_each`` (SQLite 3.33+, UPDATE ... FROM).

Every statement keeps its guard (a terminal row is never rewritten; a deferral needs the
worker's claim), and RETURNING names the rows that really moved, so only those are charged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, DateTime, TextClause, bindparam, text

from schemas.jobs import TERMINAL_REQUEST_STATES, RequestState
from schemas.outcomes import Outcome
from storage.money import to_pico

__all__ = ["defer_rows", "finish_rows"]

_TERMINAL = ", ".join(f"'{s.value}'" for s in TERMINAL_REQUEST_STATES)

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


def _dumps(rows: list[tuple[Any, ...]]) -> str:
    return json.dumps(rows, separators=(",", ":"), ensure_ascii=False)


def finish_rows(conn: Connection, part: Sequence[Outcome], now: datetime
                ) -> list[tuple[str, int]]:
    """Move rows to their terminal state unless they are there already; the rows moved.

    ``part`` holds at most one outcome per row (the caller keeps the first).
    """
    rows = [
        (o.job_id, o.seq, o.kind.value, o.deployment, o.provider, o.status_code,
         o.upstream_request_id, o.response, o.error_code, o.error_message,
         o.usage.prompt_tokens, o.usage.completion_tokens, o.usage.cached_tokens,
         to_pico(o.cost), o.latency_ms, o.route)
        for o in part
    ]
    stmt = _finish_sql(conn.dialect.name)
    return [(r[0], int(r[1])) for r in conn.execute(stmt, {"rows": _dumps(rows), "now": now})]


def defer_rows(conn: Connection, part: Sequence[Outcome]) -> None:
    """Put rows back to wait for ``not_before``, where this worker's claim still holds them."""
    rows = [
        (o.job_id, o.seq, o.claim, o.not_before, o.deployment, o.provider, o.status_code,
         o.error_code, o.error_message, o.route, int(o.throttled))
        for o in part
    ]
    conn.execute(_defer_sql(conn.dialect.name), {"rows": _dumps(rows)})
