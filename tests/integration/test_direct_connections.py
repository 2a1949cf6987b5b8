"""On PostgreSQL a worker claims rows on its feeders' own connections (storage/direct.py) and
writes a realtime request's result from the engine's loop, on a connection of its own
(workers/loop_writer.py); with the setting off, both go through SQLAlchemy's pool. Either way
the user sees the same: the result, its cost, the job ended once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from schemas.jobs import JobStatus, RequestState
from storage import make_engine
from tests.stack import Stack, make_stack
from workers.engine import CLAIMS_APPLICATION_NAME
from workers.loop_writer import APPLICATION_NAME


@pytest.fixture
def pg_stack(tmp_path: Path, postgres_url: str, redis_url: str, mock: object
             ) -> Iterator[Stack]:
    s = make_stack(tmp_path, postgres_url, redis_url, mock.url)  # type: ignore[attr-defined]
    yield s
    s.close()


def _connections(db: Engine, name: str) -> int:
    with db.connect() as conn:
        return int(conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %(name)s",
            {"name": name}).scalar_one())


@pytest.mark.parametrize("direct", ["true", "false"])
def test_realtime_results_are_the_same_whoever_runs_the_statements(
        pg_stack: Stack, postgres_url: str, direct: str) -> None:
    db = make_engine(postgres_url)
    pg_stack.start_worker(BATCHYARD_WORKER__DIRECT_CONNECTIONS=direct)
    views = []
    for i in range(3):  # one at a time: each is the only write, which the loop writer takes
        job = pg_stack.producer.submit([f"hello {i}"], tier="realtime", model="small")
        views.append(pg_stack.producer.wait(job.id, timeout=30))

    assert [v.status for v in views] == [JobStatus.COMPLETED] * 3
    for view in views:
        assert view.counts[RequestState.SUCCEEDED] == 1 and view.cost > 0
        assert view == pg_stack.producer.status(view.id)
        [line] = pg_stack.producer.results(view.id)
        assert line.response is not None
    assert _connections(db, APPLICATION_NAME) == (1 if direct == "true" else 0)
    claims = _connections(db, CLAIMS_APPLICATION_NAME)  # one per feeder thread that claimed
    assert claims >= 1 if direct == "true" else claims == 0
    db.dispose()
