"""Engines and connections: SQLite (the embedded default) or PostgreSQL, one code path."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Label, create_engine, event, func, literal_column, true
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

__all__ = ["lazy_commit", "make_engine", "without_transaction"]

SQLITE_BUSY_TIMEOUT_MS = 60_000
PING_AFTER_IDLE_S = 1.0
"""A pooled PostgreSQL connection idle this long is pinged before it is handed out."""


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and its folder created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, **kwargs)
    if parsed.drivername == "postgresql":  # the URL object: str() would mask the password
        parsed = parsed.set(drivername="postgresql+psycopg")
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    engine = create_engine(parsed, **kwargs)
    _ping_when_idle(engine)
    return engine


def without_transaction(engine: Engine) -> Connection:
    """A connection whose statements each run as their own transaction (PostgreSQL's
    autocommit): one round trip a statement, with no BEGIN before and no COMMIT or ROLLBACK
    after. For a single write statement (the claim), and for reads: under READ COMMITTED every
    statement takes its own snapshot inside a transaction too, so a read sees the same. SQLite
    keeps its transactions, which cost no round trip there."""
    conn = engine.connect()
    if engine.dialect.name == "postgresql":
        conn.execution_options(isolation_level="AUTOCOMMIT")
    return conn


def lazy_commit() -> Label[str]:
    """PostgreSQL: a column that makes its statement's commit asynchronous (the statement's
    own transaction only: ``set_config(..., is_local => true)``; the session keeps its
    setting). The commit returns before its WAL record is flushed: a server crash in the next
    few hundred milliseconds (``wal_writer_delay``) can lose it, and nothing else can.

    Only for writes whose loss delays work and loses nothing, which a later durable commit
    makes durable too (the WAL is flushed in order). The claim: a lost lease leaves its row
    waiting; the worker's write finishes a waiting row as well as a running one, and the
    reconciler hands a row with no message back to the queue. The dispatched mark: a lost
    one makes the reconciler publish the job again, and claims dedupe. Never the submit
    (published ids must exist) nor the write of results (a waiter is told they are stored).
    Measured on the realtime path: a WAL flush is 0.1-0.2 ms of a claim's 0.3.
    """
    return func.set_config(literal_column("'synchronous_commit'"), literal_column("'off'"),
                           true()).label("lazy_commit")


def _ping_when_idle(engine: Engine) -> None:
    """Ping a connection on checkout only if it sat in the pool ``PING_AFTER_IDLE_S`` or more.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: a round trip per transaction,
    0.2-0.3 ms each on this machine's loopback, and a realtime request runs four transactions
    (tenant lookup, submit, claim, write). A connection that went stale did so while idle: the
    server restarted, or something between dropped it. One used within the last second is
    handed out as it is; should the server have restarted in that second, the statement fails
    as a disconnect, SQLAlchemy invalidates the pool, and the caller's retry gets a fresh
    connection (the worker's claims and writes retry by design). A failed ping discards the
    connection and the pool tries another (SQLAlchemy's documented checkout protocol).
    """

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn: Any, record: ConnectionPoolEntry,
              _proxy: PoolProxiedConnection) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return  # a new connection, or one in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise DisconnectionError(f"a pooled connection failed its ping: {exc}") from exc


def _sqlite_engine(url: str, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return engine
