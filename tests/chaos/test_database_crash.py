"""The PostgreSQL server crashing mid-run, on a private server killed ``-m immediate``.

Every connection of the workers and the producer dies with it, calls are in flight, and the
server runs crash recovery when it starts again. The audit checks every line came back
exactly once and was charged once.

What this cannot show: the loss of commits that did not wait for their WAL flush (the claim
and the dispatched mark, ``storage.db.lazy_commit``). A server process that dies leaves what
it had written to the kernel, and PostgreSQL writes an asynchronous commit's WAL out within a
page's worth of further WAL or one ``wal_writer_delay``; only a machine crash loses it.
(Made asynchronous on purpose, even the write of results was never lost here in trials.)
Why losing those two delays work and loses none is argued in docs/RELIABILITY.md, and
``test_a_lazy_commit_leaves_the_connection_committing_durably`` checks the setting is the
statement's alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.chaos import audit_job
from schemas.jobs import JobStatus
from storage import make_engine, upgrade
from tests.chaos.pgserver import PostgresServer, postgres_binaries
from tests.helpers import wait_for
from tests.stack import Stack, make_stack


@pytest.fixture
def crashable() -> Iterator[PostgresServer]:
    bindir = postgres_binaries()
    if bindir is None:
        message = "PostgreSQL's server binaries (initdb, pg_ctl) are not installed"
        if os.environ.get("BATCHYARD_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    server = PostgresServer(bindir)
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
