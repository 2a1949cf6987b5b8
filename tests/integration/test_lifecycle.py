"""A job's life with real workers: cancel stops new upstream calls, a completion window ends
the job expired with what finished kept, and results export in both orders and as CSV."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from batchyard.export import CSV_COLUMNS, export_results
from schemas.jobs import JobStatus, RequestState
from schemas.keys import Tier
from schemas.outcomes import Outcome, OutcomeKind
from schemas.webhooks import WebhookSettings, new_secret
from storage import claim, record
from storage.jobs import iter_results
from tests.helpers import wait_for
from tests.stack import Stack
from tests.webhook_receiver import Receiver, receiver

SECRET = new_secret()


def _stats(stack: Stack) -> dict[str, object]:
    return httpx.get(f"{stack.mock_url}/_mock/stats", params={"arrivals": 1}).json()


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_cancel_stops_new_upstream_calls_and_the_counts_add_up(stack: Stack) -> None:
    from producers.publisher import Publisher

    httpx.post(f"{stack.mock_url}/_mock/config", json={"latency_ms": 300})
    stack.start_worker("--max-in-flight", "50")
    job = stack.producer.submit([f"item {i}" for i in range(2000)], model="small", tier="bulk")
    running = wait_for(lambda: (v := stack.producer.status(job.id)).finished >= 100 and v,
                       120, "100 requests to finish")
    assert running.eta_seconds is not None and running.eta_seconds > 0

    cancelling = stack.producer.cancel(job.id)
    settled_at = time.time()
    in_flight = cancelling.counts.get(RequestState.RUNNING, 0)
    final = stack.producer.wait(job.id, timeout=60)

    assert cancelling.status is JobStatus.CANCELLING and 0 < in_flight <= 50
    assert final.status is JobStatus.CANCELLED
    done = {s: final.counts.get(s, 0) for s in RequestState}
    assert done[RequestState.SUCCEEDED] + done[RequestState.CANCELLED] == 2000
    assert done[RequestState.CANCELLED] >= 1000
    arrivals = _stats(stack)["arrivals"]["up-a"]  # type: ignore[index]
    assert len(arrivals) == done[RequestState.SUCCEEDED]  # every call recorded, none twice
    assert sum(t > settled_at for t in arrivals) <= in_flight  # only calls already claimed
    # Duplicate messages for the cancelled job, then a sentinel behind them: no call starts.
    publisher = Publisher(stack.settings.redis_url)
    publisher.publish(job.id, Tier.BULK, list(range(2000)), 64)
    publisher.close()
    sentinel = stack.producer.submit(["after"], model="large", tier="bulk")
    assert stack.producer.wait(sentinel.id, timeout=60).status is JobStatus.COMPLETED
    assert _stats(stack)["by_model"]["up-a"] == done[RequestState.SUCCEEDED]  # type: ignore[index]
    errors = [line.error for line in stack.producer.results(job.id) if line.error]
    assert {e.code for e in errors} == {"batch_cancelled"}
    assert len(errors) == done[RequestState.CANCELLED]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_completion_window_ends_the_job_expired_keeping_what_finished(
        stack: Stack, hook: Receiver) -> None:
    stack.settings = stack.settings.model_copy(
        update={"webhooks": WebhookSettings(allow=["127.0.0.1"])})
    httpx.post(f"{stack.mock_url}/_mock/config", json={"latency_ms": 1000})
    stack.start_worker("--max-in-flight", "4", BATCHYARD_WEBHOOKS__SECRET=SECRET,
                       BATCHYARD_WEBHOOKS__ALLOW="127.0.0.1", BATCHYARD_WEBHOOKS__POLL_S="0.1")
    job = stack.producer.submit([f"slow {i}" for i in range(200)], model="small", tier="high",
                                completion_window="6s", webhook_url=hook.url)

    final = stack.producer.wait(job.id, timeout=90)

    assert final.status is JobStatus.EXPIRED
    succeeded, expired = final.counts[RequestState.SUCCEEDED], final.counts[RequestState.EXPIRED]
    assert succeeded >= 4 and expired >= 100 and succeeded + expired == 200
    assert final.expires_at and final.finalizing_at and final.completed_at
    assert final.expires_at <= final.finalizing_at <= final.completed_at
    lines = list(stack.producer.results(job.id))
    kept = [line for line in lines if line.response is not None]
    assert len(kept) == succeeded and all(line.response.status_code == 200 for line in kept)
    assert [line.error.code for line in lines if line.error] == ["batch_expired"] * expired
    assert _stats(stack)["total"] == succeeded  # nothing started after the deadline ran on
    wait_for(lambda: hook.received, 30, "the job.expired webhook")
    event = Webhook(SECRET).verify(hook.received[0].body, hook.received[0].headers)
    assert event["type"] == "job.expired"
    assert event["data"]["request_counts"]["expired"] == expired


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_results_export_in_input_or_completion_order_as_jsonl_or_csv(stack: Stack,
                                                                     tmp_path: Path) -> None:
    job = stack.producer.submit([f"q{i}" for i in range(6)], model="small")
    engine = stack.producer.engine
    claim(engine, job.id, [0, 1, 2], "t", lease_s=60, now=time.time())
    for seq in (2, 0, 1):  # they finish in this order
        body = {"choices": [{"message": {"content": f"answer {seq}"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
        record(engine, [Outcome(kind=OutcomeKind.SUCCEEDED, job_id=job.id, seq=seq, claim="t",
                                status_code=200, response=json.dumps(body))])
    stack.producer.cancel(job.id)

    by_input = [line.custom_id for line in iter_results(engine, job.id, page=2)]
    by_completion = [line.custom_id for line in iter_results(engine, job.id, page=2,
                                                             order="completion")]
    out, err = tmp_path / "out.csv", tmp_path / "err.csv"
    counts = export_results(stack.producer, job.id, out, err, "completion", "csv")

    assert by_input == [f"request-{i}" for i in range(1, 7)]
    assert by_completion[:3] == ["request-3", "request-1", "request-2"]
    assert sorted(by_completion[3:]) == ["request-4", "request-5", "request-6"]
    assert counts == (3, 3)
    rows = list(csv.DictReader(out.open()))
    assert [r["content"] for r in rows] == ["answer 2", "answer 0", "answer 1"]
    assert rows[0]["prompt_tokens"] == "3" and rows[0]["finish_reason"] == "stop"
    errors = list(csv.DictReader(err.open()))
    assert tuple(errors[0]) == CSV_COLUMNS
    assert {r["error_code"] for r in errors} == {"batch_cancelled"}
