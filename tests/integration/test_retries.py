"""Upstream failures: retryable ones are retried with backoff, the rest fail at once; every
request ends in exactly one terminal state."""

from __future__ import annotations

import httpx
import pytest

from schemas.jobs import JobStatus, RequestState
from tests.stack import Stack


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_retryable_errors_are_retried_until_success(stack: Stack) -> None:
    httpx.post(f"{stack.mock_url}/_mock/config", json={"error_rate": 0.3, "seed": 11})
    stack.start_worker(BATCHYARD_WORKER__MAX_ATTEMPTS="12")
    job = stack.producer.submit([f"question {i}" for i in range(200)], model="small")

    final = stack.producer.wait(job.id, timeout=180)

    assert final.status is JobStatus.COMPLETED
    assert final.counts[RequestState.SUCCEEDED] == 200
    stats = httpx.get(f"{stack.mock_url}/_mock/stats").json()
    assert stats["total"] > 200  # some calls failed and were made again
    assert all(line.error is None for line in stack.producer.results(job.id))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_errors_end_in_the_right_state_with_the_right_class(stack: Stack) -> None:
    stack.start_worker(BATCHYARD_WORKER__MAX_ATTEMPTS="3")
    prompts = {
        "ok": "plain question",
        "bad": "[[mock:status=400]] rejected",
        "auth": "[[mock:status=401]] unauthorised",
        "server": "[[mock:status=500]] always failing",
        "limited": "[[mock:status=429]] always throttled",
        "context": "[[mock:context_length]] too long",
    }
    rows = [{"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "small", "messages": [{"role": "user", "content": text}]}}
            for cid, text in prompts.items()]
    job = stack.producer.submit(rows)

    final = stack.producer.wait(job.id, timeout=120)

    assert final.status is JobStatus.COMPLETED
    lines = {line.custom_id: line for line in stack.producer.results(job.id)}
    assert lines["ok"].response is not None and lines["ok"].error is None
    codes = {cid: line.error.code for cid, line in lines.items() if line.error}
    assert codes == {"bad": "invalid_request", "auth": "authentication_error",
                     "server": "server_error", "limited": "rate_limited",
                     "context": "context_length_exceeded"}
    assert "gave up after 3 attempts" in lines["server"].error.message  # type: ignore[union-attr]
    assert "openai 500" in lines["server"].error.message  # type: ignore[union-attr]
    assert "openai 400" in lines["bad"].error.message  # type: ignore[union-attr]
    by_model = httpx.get(f"{stack.mock_url}/_mock/stats").json()
    # 1 ok + 1 bad + 1 auth + 1 context + 3 server + 3 limited
    assert by_model["total"] == 10
