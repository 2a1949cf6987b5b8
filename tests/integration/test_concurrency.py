"""One worker process keeps hundreds of upstream calls in flight at once, and no more than asked."""

from __future__ import annotations

import httpx
import pytest

from schemas.jobs import JobStatus
from tests.stack import Stack


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_one_worker_process_keeps_at_least_200_calls_in_flight(stack: Stack) -> None:
    httpx.post(f"{stack.mock_url}/_mock/config", json={"latency_ms": 1500})
    job = stack.producer.submit([f"slow question {i}" for i in range(600)], tier="bulk",
                                model="small")
    stack.start_worker("--max-in-flight", "512")

    final = stack.producer.wait(job.id, timeout=120)

    assert final.status is JobStatus.COMPLETED
    stats = httpx.get(f"{stack.mock_url}/_mock/stats").json()
    assert stats["total"] == 600
    assert stats["max_in_flight"] >= 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_max_in_flight_bounds_the_calls_the_upstream_sees(stack: Stack) -> None:
    httpx.post(f"{stack.mock_url}/_mock/config", json={"latency_ms": 100})
    job = stack.producer.submit([f"question {i}" for i in range(400)], tier="bulk",
                                model="small")
    stack.start_worker("--max-in-flight", "24")

    final = stack.producer.wait(job.id, timeout=120)

    assert final.status is JobStatus.COMPLETED
    stats = httpx.get(f"{stack.mock_url}/_mock/stats").json()
    assert stats["total"] == 400
    # never more calls than the limit, and a backlog keeps the upstream at (or next to) it
    assert 20 <= stats["max_in_flight"] <= 24
