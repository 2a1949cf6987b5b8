"""Signed webhooks from real workers: one completion event per job, retries on the schedule
with the same webhook-id, and the SSRF guard at submit time."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select
from standardwebhooks import Webhook

from schemas.errors import InputError
from schemas.jobs import JobStatus
from schemas.keys import Tier
from schemas.webhooks import DeliveryState, WebhookSettings, new_secret
from storage.models import EVENTS, JOBS
from storage.webhook_log import list_deliveries
from tests.helpers import ROOT, wait_for
from tests.stack import Stack
from tests.webhook_receiver import Receiver, receiver

SECRET = new_secret()
HOOK_ENV = {
    "BATCHYARD_WEBHOOKS__SECRET": SECRET,
    "BATCHYARD_WEBHOOKS__ALLOW": "127.0.0.1",
    "BATCHYARD_WEBHOOKS__RETRY_SCHEDULE_S": "[0.3, 0.3, 0.3, 0.3]",
    "BATCHYARD_WEBHOOKS__POLL_S": "0.1",
}


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


def _allow_local(stack: Stack) -> None:
    stack.settings = stack.settings.model_copy(
        update={"webhooks": WebhookSettings(allow=["127.0.0.1"])})


def test_a_completed_job_is_announced_once_with_a_valid_signature(stack: Stack, hook: Receiver
                                                                  ) -> None:
    from producers.publisher import Publisher

    _allow_local(stack)
    stack.start_worker(**HOOK_ENV)
    stack.start_worker(**HOOK_ENV)
    job = stack.producer.submit([f"prompt {i}" for i in range(60)], model="small",
                                tier="high", webhook_url=hook.url)
    publisher = Publisher(stack.settings.redis_url)
    for _ in range(2):  # every chunk delivered twice more: duplicates race to finish the job
        publisher.publish(job.id, Tier.HIGH, list(range(60)), 4)
    publisher.close()

    final = stack.producer.wait(job.id, timeout=120)
    wait_for(lambda: hook.received, 30, "the webhook")
    [delivery] = wait_for(lambda: [d for d in list_deliveries(stack.producer.engine, job.id)
                                   if d.state is DeliveryState.SUCCEEDED], 30, "its record")

    assert final.status is JobStatus.COMPLETED
    assert len(hook.received) == 1
    got = hook.received[0]
    body = Webhook(SECRET).verify(got.body, got.headers)
    assert body["type"] == "job.completed"
    data = body["data"]
    assert data["id"] == job.id and data["status"] == "completed"
    assert data["request_counts"] == {"total": 60, "succeeded": 60, "failed": 0,
                                      "cancelled": 0, "expired": 0}
    assert (data["prompt_tokens"], data["completion_tokens"]) == (final.prompt_tokens,
                                                                  final.completion_tokens)
    assert Decimal(data["cost_usd"]) == final.cost > 0
    assert data["results"]["output_lines"] == 60
    assert data["results"]["command"].startswith(f"batchyard results {job.id}")
    assert got.headers["webhook-id"] == delivery.event_id and delivery.attempts == 1
    with stack.producer.engine.connect() as conn:
        events = conn.execute(select(func.count()).select_from(EVENTS)
                              .where(EVENTS.c.job_id == job.id)).scalar()
    assert events == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_failing_receiver_gets_retries_with_the_same_webhook_id(stack: Stack, hook: Receiver
                                                                  ) -> None:
    for _ in range(3):
        hook.answer(500, body=b"receiver down")
    _allow_local(stack)
    stack.start_worker(**HOOK_ENV)
    job = stack.producer.submit(["one prompt"], model="small", tier="realtime",
                                webhook_url=hook.url)

    stack.producer.wait(job.id, timeout=60)
    [delivery] = wait_for(lambda: [d for d in list_deliveries(stack.producer.engine, job.id)
                                   if d.state is DeliveryState.SUCCEEDED], 60, "a success")

    assert [a.status_code for a in delivery.attempt_log] == [500, 500, 500, 200]
    assert delivery.attempts == 4
    assert delivery.attempt_log[0].response_excerpt == "receiver down"
    assert all(a.latency_ms is not None for a in delivery.attempt_log)
    assert len(hook.received) == 4
    assert {r.headers["webhook-id"] for r in hook.received} == {delivery.event_id}
    for r in hook.received:  # each attempt is signed afresh, and each verifies
        Webhook(SECRET).verify(r.body, r.headers)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_loopback_webhook_is_refused_unless_allow_listed(stack: Stack, hook: Receiver) -> None:
    with pytest.raises(InputError) as info:
        stack.producer.submit(["hi"], model="small", webhook_url=hook.url)
    cli = subprocess.run(
        [sys.executable, "-m", "batchyard", "submit", "--webhook-url", "http://127.0.0.1:9/x",
         str(_one_line(stack))], env={**stack.env, "BATCHYARD_WEBHOOKS__ALLOW": ""}, cwd=ROOT,
        capture_output=True, text=True, timeout=120)

    assert "webhook_url" in str(info.value) and "127.0.0.1 (loopback)" in str(info.value)
    assert "BATCHYARD_WEBHOOKS__ALLOW" in str(info.value)
    assert cli.returncode == 2 and "loopback" in cli.stderr
    with stack.producer.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(JOBS)).scalar() == 0
    allowed = Stack(tmp=stack.tmp, settings=stack.settings.model_copy(
        update={"webhooks": WebhookSettings(allow=["127.0.0.0/8"])}), env=stack.env,
        mock_url=stack.mock_url)
    try:
        assert allowed.producer.submit(["hi"], model="small", webhook_url=hook.url).total == 1
    finally:
        allowed.close()


def _one_line(stack: Stack) -> Path:
    path = stack.tmp / "one.jsonl"
    path.write_text(json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                                "body": {"model": "small",
                                         "messages": [{"role": "user", "content": "hi"}]}}))
    return path
