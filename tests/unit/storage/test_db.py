"""Pooled PostgreSQL connections: pinged only after sitting idle, replaced when found dead."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text

import storage.db
from storage import make_engine
from storage.db import without_transaction
from tests.conftest import TEST_POSTGRES_URL, _postgres_database


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Engine, list[int]]]:
    """An engine on a fresh PostgreSQL database, and the list its pings are counted in."""
    gen = _postgres_database()
    engine = make_engine(next(gen), pool_size=1, max_overflow=0)
    pings: list[int] = []
    real = engine.dialect.do_ping

    def counted(dbapi_conn: Any) -> bool:
        pings.append(1)
        return bool(real(dbapi_conn))

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    yield engine, pings
    engine.dispose()
    next(gen, None)


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_in_use_a_moment_ago_is_not_pinged(engine: tuple[Engine, list[int]]
                                                        ) -> None:
    db, pings = engine
    pids = {_backend_pid(db) for _ in range(5)}
    assert len(pids) == 1  # the same pooled connection each time
    assert pings == []


def test_an_idle_connection_killed_by_the_server_is_replaced_before_use(
        engine: tuple[Engine, list[int]], monkeypatch: pytest.MonkeyPatch) -> None:
    db, pings = engine
    first = _backend_pid(db)
    with psycopg.connect(TEST_POSTGRES_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first,))
    monkeypatch.setattr(storage.db, "PING_AFTER_IDLE_S", 0.0)  # it has been idle long enough
    second = _backend_pid(db)  # no error: the ping found it dead, the pool opened another
    assert second != first
    assert pings == [1]


def test_a_connection_used_without_transaction_goes_back_to_the_pool_transactional(
        engine: tuple[Engine, list[int]]) -> None:
    db, _ = engine  # one pooled connection: the next checkout gets the same one back
    with db.begin() as conn:
        conn.execute(text("CREATE TABLE t (x int)"))
    with without_transaction(db) as conn:
        assert conn.connection.dbapi_connection.autocommit is True  # type: ignore[union-attr]
        conn.execute(text("INSERT INTO t VALUES (1)"))  # committed by itself
    with pytest.raises(RuntimeError), db.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (2)"))
        raise RuntimeError("rolled back")
    with db.connect() as conn:
        assert conn.execute(text("SELECT x FROM t")).scalars().all() == [1]
