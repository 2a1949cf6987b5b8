"""The PostgreSQL server crashing mid-run, on a private server killed ``-m immediate``.

Every connection of the workers and the producer dies with it, calls are in flight, and the
server runs crash recovery when it starts again. The audits check every line came back
exactly once and was charged once.

The claim and the dispatched mark do not wait for their WAL flush (``storage.db.lazy_commit``)
and a crash loses those not yet written out. The second test makes sure it does (the server
writes WAL out every 10 s instead of 200 ms, and the calls take 3 s, so nothing else writes
WAL meanwhile): the rows whose claims were lost go back to waiting, their calls still finish
them, and nothing is run or charged twice in the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from bench.chaos import audit_job
from schemas.jobs import JobStatus, RequestState
from storage import make_engine, upgrade
from storage.models import REQUESTS
from tests.chaos.pgserver import PostgresServer, postgres_binaries
from tests.conftest import _unavailable
from tests.helpers import wait_for
from tests.stack import Stack, make_stack


@pytest.fixture(params=[{}], ids=["defaults"])
def crashable(request: pytest.FixtureRequest) -> Iterator[PostgresServer]:
    bindir = postgres_binaries()
    if bindir is None:
        _unavailable("PostgreSQL's server binaries (initdb, pg_ctl)")  # fails or skips
    assert bindir is not None
    server = PostgresServer(bindir, **request.param)
    try:
        server.start()
        engine = make_engine(server.url)
        upgrade(engine)
        engine.dispose()
        yield server
    finally:
        server.remove()


@pytest.fixture
def stack(tmp_path: Path, crashable: PostgresServer, redis_url: str, mock: object
          ) -> Iterator[Stack]:
    s = make_stack(tmp_path, crashable.url, redis_url, mock.url)  # type: ignore[attr-defined]
    yield s
    s.close()


def test_a_database_crash_loses_no_request_and_charges_none_twice(
        stack: Stack, crashable: PostgresServer) -> None:
    httpx.post(f"{stack.mock_url}/_mock/config", json={"latency_ms": 200}).raise_for_status()
    stack.start_worker("--max-in-flight", "64")
    job = stack.producer.submit([f"question {i}" for i in range(600)], model="small")
    realtime = stack.producer.submit([f"urgent {i}" for i in range(20)], tier="realtime",
                                     model="small")
    wait_for(lambda: stack.producer.status(job.id).finished >= 100, 60, "some progress")

    crashable.crash()  # claims, marks and calls in flight at this moment
    crashable.start()  # crash recovery
    final = stack.producer.wait(job.id, timeout=120)
    realtime_final = stack.producer.wait(realtime.id, timeout=60)

    assert final.status is JobStatus.COMPLETED, crashable.log()[-2000:]
    audit = audit_job(stack.producer.engine, job.id, [f"request-{i}" for i in range(1, 601)])
    assert audit.problems() == [] and audit.succeeded == 600
    assert realtime_final.status is JobStatus.COMPLETED
    audit = audit_job(stack.producer.engine, realtime.id,
                      [f"request-{i}" for i in range(1, 21)])
    assert audit.problems() == [] and audit.succeeded == 20
    assert "database system was interrupted" in crashable.log()  # it did crash and recover


@pytest.mark.parametrize("crashable", [{"wal_writer_delay": "10s"}], indirect=True,
                         ids=["slow-wal-writer"])
def test_claims_a_crash_lost_delay_their_rows_and_lose_none(
        stack: Stack, crashable: PostgresServer) -> None:
    httpx.post(f"{stack.mock_url}/_mock/config", json={"latency_ms": 3000}).raise_for_status()
    stack.start_worker("--max-in-flight", "64")
    job = stack.producer.submit([f"urgent {i}" for i in range(10)], tier="realtime",
                                model="small")  # ten one-row chunks: ten claims
    wait_for(lambda: stack.producer.status(job.id).counts.get(RequestState.RUNNING) == 10, 30,
             "every row claimed")

    crashable.crash()  # within 3 s of the claims: no result written since
    crashable.start()
    waiting = _queued(crashable.url, job.id)  # the producer's pooled connections died too
    final = stack.producer.wait(job.id, timeout=60)

    assert waiting > 0, "no claim was lost: the test did not exercise that path"
    assert final.status is JobStatus.COMPLETED
    audit = audit_job(stack.producer.engine, job.id, [f"request-{i}" for i in range(1, 11)])
    assert audit.problems() == [] and audit.succeeded == 10


def _queued(url: str, job_id: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(REQUESTS).where(
                REQUESTS.c.job_id == job_id, REQUESTS.c.state == RequestState.QUEUED)
            ).scalar_one())
    finally:
        engine.dispose()
