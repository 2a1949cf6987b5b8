"""Throwaway databases for one benchmark: a SQLite file, or a new PostgreSQL database.

PostgreSQL databases are created and dropped the way tests/conftest.py does it, on the server
at ``BENCH_POSTGRES_URL`` (default: TEST_POSTGRES_URL, then the local server).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy import text

from storage import make_engine, upgrade

__all__ = ["POSTGRES_URL", "database", "server_cpu_seconds", "size_bytes"]

POSTGRES_URL = os.environ.get(
    "BENCH_POSTGRES_URL",
    os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
)


@contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    """A fresh, migrated database of ``kind`` ("sqlite" or "postgres"); dropped afterwards."""
    if kind == "sqlite":
        path = folder / f"bench-{secrets.token_hex(3)}.db"
        url = f"sqlite:///{path}"
        _migrate(url)
        try:
            yield url
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    name = f"batchyard_bench_{secrets.token_hex(4)}"
    admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)
    admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{POSTGRES_URL.rsplit('/', 1)[0]}/{name}"
    try:
        _migrate(url)
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _migrate(url: str) -> None:
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()


def size_bytes(url: str) -> int:
    """The database's size on disk: the SQLite file (after a checkpoint), or pg_database_size."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
                path = engine.url.database or ""
                return Path(path).stat().st_size
            return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
                       or 0)
    finally:
        engine.dispose()


def server_cpu_seconds(url: str) -> float:
    """CPU seconds used so far by the PostgreSQL backends serving this database (0 for SQLite).

    The database is fresh per run, so its backends serve this run alone: their CPU is the
    database's share, apart from other people's use of the same server.
    """
    from bench.procs import cpu_seconds

    engine = make_engine(url)
    try:
        if engine.dialect.name != "postgresql":
            return 0.0
        with engine.connect() as conn:
            pids = conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()")).scalars().all()
        return sum(cpu_seconds(int(pid), tree=False) for pid in pids)
    finally:
        engine.dispose()
