"""One worker process keeps hundreds of upstream calls in flight at once, and no more than asked."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from schemas.jobs import JobStatus
from tests.stack import Stack


def _upstream_stats(stack: Stack, *, requests: int, latency_ms: int, max_in_flight: int
                    ) -> dict[str, Any]:
    """Run a bulk job of ``requests`` through one worker; the mock's counters after it."""
    httpx.post(f"{stack.mock_url}/_mock/config", json={"latency_ms": latency_ms})
    job = stack.producer.submit([f"question {i}" for i in range(requests)], tier="bulk",
                                model="small")
    stack.start_worker("--max-in-flight", str(max_in_flight))

    final = stack.producer.wait(job.id, timeout=120)

    assert final.status is JobStatus.COMPLETED
    stats: dict[str, Any] = httpx.get(f"{stack.mock_url}/_mock/stats").json()
    assert stats["total"] == requests
    return stats


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_one_worker_process_keeps_at_least_200_calls_in_flight(stack: Stack) -> None:
    stats = _upstream_stats(stack, requests=600, latency_ms=1500, max_in_flight=512)

    assert stats["max_in_flight"] >= 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_max_in_flight_bounds_the_calls_the_upstream_sees(stack: Stack) -> None:
    stats = _upstream_stats(stack, requests=400, latency_ms=100, max_in_flight=24)

    # never more calls than the limit, and a backlog keeps the upstream at (or next to) it
    assert 20 <= stats["max_in_flight"] <= 24
