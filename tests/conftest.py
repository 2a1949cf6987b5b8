"""Shared fixtures: real Redis, real SQLite and PostgreSQL, the mock upstream, real workers.

Service URLs come from the environment (REDIS_URL, TEST_POSTGRES_URL) and default to the local
services. With BATCHYARD_REQUIRE_SERVICES=1 (CI) a missing service fails the run instead of
skipping.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy import Engine

from tests.stack import Stack, make_stack

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
TEST_POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE = os.environ.get("BATCHYARD_REQUIRE_SERVICES") == "1"


def _unavailable(what: str) -> None:
    if REQUIRE:
        pytest.fail(f"{what} is required (BATCHYARD_REQUIRE_SERVICES=1) but does not answer")
    pytest.skip(f"{what} does not answer")


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A flushed Redis database for one test."""
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        _unavailable(f"Redis at {TEST_REDIS_URL}")
    client.flushdb()
    yield TEST_REDIS_URL
    client.flushdb()
    client.close()


def _postgres_database() -> Iterator[str]:
    name = f"batchyard_test_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(TEST_POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error:
        _unavailable(f"PostgreSQL at {TEST_POSTGRES_URL}")
    admin.execute(f'CREATE DATABASE "{name}"')
    base = TEST_POSTGRES_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _migrated(url: str) -> str:
    """``url``'s database, upgraded to the schema's head."""
    from storage import make_engine, upgrade

    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database: a SQLite file, then a new PostgreSQL database."""
    if request.param == "sqlite":
        yield _migrated(f"sqlite:///{tmp_path / 'batchyard.db'}")
    else:
        yield from _postgres_url()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return _migrated(f"sqlite:///{tmp_path / 'batchyard.db'}")


def _postgres_url() -> Iterator[str]:
    gen = _postgres_database()
    yield _migrated(next(gen))
    next(gen, None)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database, for what only PostgreSQL does."""
    yield from _postgres_url()


@pytest.fixture
def postgres_engine(postgres_url: str) -> Iterator[Engine]:
    """An engine on ``postgres_url``, disposed of after the test."""
    from storage import make_engine

    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture
def mock() -> Iterator[object]:
    from mock_upstream.config import MockConfig
    from mock_upstream.server import start_in_thread

    running = start_in_thread(MockConfig())
    yield running
    running.stop()


@pytest.fixture
def stack(tmp_path: Path, database_url: str, redis_url: str, mock: object) -> Iterator[Stack]:
    s = make_stack(tmp_path, database_url, redis_url, mock.url)  # type: ignore[attr-defined]
    yield s
    s.close()
