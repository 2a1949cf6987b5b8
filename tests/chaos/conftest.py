"""Fixtures of the chaos tests: a private Redis that may be restarted, a stack on it.

The private ``redis-server`` runs without persistence on a free port, so restarting it loses
every key, as a production Redis without AOF would; the shared Redis is never touched.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.chaos import RedisServer
from tests.stack import Stack, make_stack


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def chaos_stack(tmp_path: Path, database_url: str, private_redis: RedisServer, mock: object
                ) -> Iterator[Stack]:
    """The usual test stack, on the private Redis."""
    s = make_stack(tmp_path, database_url, private_redis.url, mock.url)  # type: ignore[attr-defined]
    yield s
    s.close()
