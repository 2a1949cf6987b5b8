"""The database unreachable for a while: workers keep their outcomes and retry, submissions fail
with a clear error and store nothing, and everything finishes once it is back.

PostgreSQL is reached through a TCP proxy the test cuts and restores (the server itself keeps
running for the other tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from bench.chaos import audit_job
from schemas.errors import DatabaseUnavailableError
from schemas.jobs import JobStatus
from storage.models import JOBS, REQUESTS
from tests.chaos.proxy import TcpProxy
from tests.helpers import wait_for
from tests.stack import Stack, make_stack


@pytest.fixture
def proxied(tmp_path: Path, database_url: str, redis_url: str, mock: object
            ) -> Iterator[tuple[Stack, TcpProxy]]:
    proxy, url = TcpProxy.for_url(database_url)
    stack = make_stack(tmp_path, url, redis_url, mock.url)  # type: ignore[attr-defined]
    yield stack, proxy
    proxy.restore()
    stack.close()
    proxy.close()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_database_outage_delays_work_and_loses_none(proxied: tuple[Stack, TcpProxy]) -> None:
    stack, proxy = proxied
    httpx.post(f"{stack.mock_url}/_mock/config", json={"latency_ms": 200}).raise_for_status()
    stack.start_worker("--max-in-flight", "64")
    job = stack.producer.submit([f"question {i}" for i in range(600)], model="small")
    wait_for(lambda: stack.producer.status(job.id).finished >= 100, 60, "some progress")

    proxy.cut()
    with pytest.raises(DatabaseUnavailableError) as refused:
        stack.producer.submit([f"during {i}" for i in range(50)], model="small")
    log = stack.workers[0].log_path
    wait_for(lambda: log.read_text().count("outcomes failed") >= 3, 30,
             "the worker to retry writing its outcomes a few times")
    proxy.restore()
    final = stack.producer.wait(job.id, timeout=120)

    assert "the database did not answer" in str(refused.value)
    assert "was not stored" in str(refused.value)
    assert final.status is JobStatus.COMPLETED
    audit = audit_job(stack.producer.engine, job.id, [f"request-{i}" for i in range(1, 601)])
    assert audit.problems() == [] and audit.succeeded == 600
    with stack.producer.engine.connect() as conn:  # the refused submission left nothing
        assert conn.execute(select(func.count()).select_from(JOBS)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(REQUESTS)).scalar() == 600
