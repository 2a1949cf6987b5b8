"""PostgreSQL: a hot statement run on a psycopg connection of its own, not through SQLAlchemy.

SQLAlchemy still writes and compiles the statement (once, for psycopg); only running it skips
SQLAlchemy's engine: the pool's checkout and return with their events, the execution context,
the expanding ``IN`` rendered anew for every call, and its result rows. On the worker's
realtime path that was most of the cost of the claim: measured on this machine (docs/
PERFORMANCE.md, session 13), one claim took 0.82-1.29 ms through the engine and 0.40-0.63 ms
on a connection of psycopg's, the server's part being the same single round trip.

- ``for_psycopg`` turns a statement into psycopg's SQL text, its expanding ``IN`` parameters
  into ``= ANY(%(name)s)`` (one text for any length of the list, which psycopg sends as an
  array), and its constant bind values into defaults.
- ``ThreadConnections`` keeps one autocommit connection per thread that uses it (the worker's
  feeder threads), opened on first use. A connection the server closed while it sat idle (a
  restart, an idle timeout) is dropped before use without a round trip: an idle connection
  with something to read has been closed, or told something that only a new one would not
  need. A failure raises SQLAlchemy's own wrapper of the driver's error (``DBAPIError``:
  ``OperationalError`` for a lost connection), as the engine's path would, so callers keep
  one contract; the failed connection is closed and the thread's next call opens another.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import select
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement, Select
from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["PgStatement", "ThreadConnections", "for_psycopg"]

log = logging.getLogger(__name__)

_EXPANDING = re.compile(r"(?<!NOT )IN \(__\[POSTCOMPILE_(\w+)\]\)")


@dataclass(frozen=True)
class PgStatement:
    """psycopg's SQL text of a statement, the values of its constant parameters, the bind
    processors of its typed ones (a JSON column's, ``Money``'s), and, for a SELECT, the
    result processors of its columns that have one (by position: ``Money``'s)."""

    sql: str
    defaults: dict[str, Any]
    processors: dict[str, Callable[[Any], Any]]
    results: tuple[tuple[int, Callable[[Any], Any]], ...] = ()

    def values(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` over the defaults, each processed as SQLAlchemy would bind it."""
        values = {**self.defaults, **params}
        for name, process in self.processors.items():
            if name in params:
                values[name] = process(values[name])
        return values


@cache
def for_psycopg(statement: ClauseElement) -> PgStatement:
    """``statement`` compiled once for psycopg; ValueError if it cannot run as one text (a
    ``NOT IN`` of a list, or another parameter rendered per call)."""
    dialect = PGDialect_psycopg()
    compiled = statement.compile(dialect=dialect)
    if not isinstance(compiled, SQLCompiler):
        raise TypeError(f"not a SQL statement: {statement!r}")
    sql = _EXPANDING.sub(r"= ANY(%(\1)s)", str(compiled))
    if "__[POSTCOMPILE_" in sql:
        raise ValueError(f"a parameter of this statement is rendered per call: {sql[:200]}")
    defaults = {name: _plain(value) for name, value in compiled.params.items()
                if not compiled.binds[name].required}  # a constant, None included
    processors: dict[str, Callable[[Any], Any]] = {}
    for bind, name in compiled.bind_names.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            if bind.expanding:
                raise ValueError(f"the list parameter {name!r} needs its values processed")
            processors[name] = process
    for name in processors.keys() & defaults.keys():  # constants: processed once, here
        defaults[name] = processors[name](defaults[name])
    results: list[tuple[int, Callable[[Any], Any]]] = []
    if isinstance(statement, Select):
        for i, column in enumerate(statement.selected_columns):
            process = column.type.dialect_impl(dialect).result_processor(dialect, None)
            if process is not None:
                results.append((i, process))
    return PgStatement(sql, defaults, processors, tuple(results))


def _plain(value: Any) -> Any:
    """A constant as psycopg adapts it: an enum by its value, a list element by element."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value.value if isinstance(value, enum.Enum) else value


class ThreadConnections:
    """One autocommit psycopg connection per thread, to ``engine``'s PostgreSQL database,
    named ``application_name`` in ``pg_stat_activity`` unless the database URL names one;
    at most ``limit`` at once (``ready`` says whether a thread may use one, else the caller
    uses the engine: an application with a thread per request does not open a connection per
    thread). A forked child does not use or close its parent's connections (``_forked``)."""

    def __init__(self, engine: Engine, application_name: str, *, limit: int = 8) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError(f"direct connections need PostgreSQL, not {engine.dialect.name}")
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        self._args = list(args)
        self._kwargs = {"application_name": application_name, **kwargs}  # the URL's wins
        self._local = threading.local()
        # weak: a thread that ends takes its connection with it (psycopg closes it when it
        # is collected); ``close`` closes those still open
        self._all: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._limit = limit
        _INSTANCES.add(self)

    def ready(self) -> bool:
        """Whether the calling thread may run a statement here: it holds a connection, or
        fewer than ``limit`` are open (another thread may take the last one meanwhile: the
        limit is kept give or take the threads racing for it)."""
        return getattr(self._local, "conn", None) is not None or len(self._all) < self._limit

    def rows(self, statement: PgStatement, params: dict[str, Any]) -> list[Any]:
        """Run ``statement`` with ``params`` (over its defaults) on this thread's connection;
        its rows, as named tuples, each column's value as the engine would return it."""
        values = statement.values(params)
        conn = self._connection(statement.sql, values)
        try:
            rows = conn.execute(statement.sql, values).fetchall()
        except psycopg.Error as exc:
            self._drop(conn)
            raise DBAPIError.instance(statement.sql, values, exc, psycopg.Error,
                                     hide_parameters=True) from exc
        if not statement.results:
            return rows
        processed = []
        for row in rows:
            fields = list(row)
            for i, process in statement.results:
                fields[i] = process(fields[i])
            processed.append(type(row)(*fields))
        return processed

    def _connection(self, sql: str, values: dict[str, Any]) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None and (conn.closed or _stale(conn)):
            self._drop(conn)
            conn = None
        if conn is None:
            try:
                conn = psycopg.connect(*self._args, autocommit=True, row_factory=namedtuple_row,
                                       **self._kwargs)
            except psycopg.Error as exc:
                raise DBAPIError.instance(sql, values, exc, psycopg.Error,
                                         hide_parameters=True) from exc
            self._local.conn = conn
            with self._lock:
                self._all.add(conn)
        return conn

    def _drop(self, conn: psycopg.Connection[Any]) -> None:
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._lock:
            self._all.discard(conn)
        try:
            conn.close()
        except psycopg.Error as exc:
            log.debug("closing a direct connection failed: %s", exc)

    def close(self) -> None:
        """Close every thread's connection (a thread that runs another statement afterwards
        opens a new one)."""
        with self._lock:
            conns, self._all = list(self._all), weakref.WeakSet()
        for conn in conns:
            try:
                conn.close()
            except psycopg.Error as exc:
                log.debug("closing a direct connection failed: %s", exc)


_INSTANCES: weakref.WeakSet[ThreadConnections] = weakref.WeakSet()


def _forked() -> None:
    """In a forked child: forget the parent's connections without touching their sessions.
    Each socket's descriptor is pointed at /dev/null first, so that closing the connection
    (here, or when it is collected) sends its goodbye nowhere instead of ending the parent's
    session; the child opens its own on first use."""
    for conns in list(_INSTANCES):
        inherited = list(conns._all)
        conns._local, conns._lock = threading.local(), threading.Lock()
        conns._all = weakref.WeakSet()
        for conn in inherited:
            try:
                null = os.open(os.devnull, os.O_RDWR)
                try:
                    os.dup2(null, conn.fileno())
                finally:
                    os.close(null)
            except (OSError, ValueError, psycopg.Error):
                continue


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


def _stale(conn: psycopg.Connection[Any]) -> bool:
    """An idle connection with something to read: the server closed it (or sent a notice
    meant for no statement). Checked without a round trip; ``poll`` where there is one, since
    ``select`` refuses a descriptor past 1023 (a worker with many calls in flight has those)."""
    try:
        fd = conn.fileno()
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([fd], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)
