"""The pipeline end to end: producer → tier queues → real Celery workers → mock upstream → DB."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from schemas.errors import InputError
from schemas.jobs import JobStatus, RequestState
from schemas.keys import Tier
from storage.models import JobRow, RequestRow
from tests.helpers import wait_for
from tests.stack import Stack


def _request_totals(stack: Stack, job_id: str) -> tuple[int, int, Decimal, int]:
    t = RequestRow.__table__
    with stack.producer.engine.connect() as conn:
        row = conn.execute(
            select(func.sum(t.c.prompt_tokens), func.sum(t.c.completion_tokens),
                   func.count()).where(t.c.job_id == job_id)
        ).one()
        costs = conn.execute(select(RequestRow.cost).where(RequestRow.job_id == job_id)).scalars()
        return int(row[0]), int(row[1]), sum(costs, Decimal(0)), int(row[2])


def test_a_job_completes_with_every_result_once_and_exact_totals(stack: Stack) -> None:
    stack.start_worker()
    prompts = [f"Summarise item number {i} in one line" for i in range(300)]
    job = stack.producer.submit(prompts, tier="standard", model="small",
                                metadata={"team": "eval"})
    assert job.total == 300

    final = stack.producer.wait(job.id, timeout=120)

    assert final.status is JobStatus.COMPLETED
    assert final.counts[RequestState.SUCCEEDED] == 300
    lines = list(stack.producer.results(job.id))
    assert [line.custom_id for line in lines] == [f"request-{i}" for i in range(1, 301)]
    assert all(line.response and line.response.status_code == 200 for line in lines)
    assert lines[0].response.body["object"] == "chat.completion"
    prompt, completion, cost, count = _request_totals(stack, job.id)
    assert count == 300
    assert (final.prompt_tokens, final.completion_tokens) == (prompt, completion)
    assert final.cost == cost > 0
    assert final.metadata == {"team": "eval"}
    stats = httpx.get(f"{stack.mock_url}/_mock/stats").json()
    assert stats["total"] == 300


def test_the_same_message_delivered_twice_yields_one_result_and_one_charge(stack: Stack) -> None:
    from producers.publisher import Publisher

    stack.start_worker()
    job = stack.producer.submit([f"prompt {i}" for i in range(40)], tier="bulk", model="large")
    publisher = Publisher(stack.settings.redis_url)
    for _ in range(2):  # the producer already published once: three deliveries of each chunk
        publisher.publish(job.id, Tier.BULK, list(range(40)), 8)
    publisher.close()

    final = stack.producer.wait(job.id, timeout=120)
    assert final.status is JobStatus.COMPLETED
    wait_for(lambda: httpx.get(f"{stack.mock_url}/_mock/stats").json()["total"] >= 40,
             30, "the upstream calls")
    prompt, _completion, cost, count = _request_totals(stack, job.id)
    assert count == 40 and final.counts[RequestState.SUCCEEDED] == 40
    assert final.cost == cost and final.prompt_tokens == prompt
    with stack.producer.engine.connect() as conn:
        completed_at = conn.execute(select(JobRow.completed_at).where(JobRow.id == job.id)).scalar()
    assert completed_at is not None
    assert len(list(stack.producer.results(job.id))) == 40


def test_a_malformed_file_is_rejected_whole_with_line_numbers(stack: Stack, tmp_path: Path
                                                              ) -> None:
    good = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "small", "messages": [{"role": "user", "content": "hi"}]}}
    lines = [json.dumps(good), "{not json", json.dumps(good),
             json.dumps({**good, "custom_id": "b", "url": "/v1/embeddings"}),
             json.dumps({**good, "custom_id": "c", "body": {**good["body"], "model": "nope"}}),
             json.dumps({"custom_id": "d", "method": "POST", "url": "/v1/chat/completions"})]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")

    with pytest.raises(InputError) as info:
        stack.producer.submit(path)

    reasons = {p.line: p.reason for p in info.value.problems}
    assert set(reasons) == {2, 3, 4, 5, 6}
    assert "bad JSON" in reasons[2]
    assert "duplicate custom_id 'a'" in reasons[3]
    assert "url" in reasons[4]
    assert "unknown model 'nope'" in reasons[5]
    assert "body: missing field" in reasons[6]
    with stack.producer.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(JobRow)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(RequestRow)).scalar() == 0


def test_high_tier_overtakes_a_bulk_backlog(stack: Stack) -> None:
    httpx.post(f"{stack.mock_url}/_mock/config", json={"latency_ms": 100})
    bulk = stack.producer.submit([f"bulk {i}" for i in range(3000)], tier="bulk", model="small")
    high = stack.producer.submit([f"high {i}" for i in range(20)], tier="high", model="small")
    stack.start_worker("--max-in-flight", "64")

    final_high = stack.producer.wait(high.id, timeout=120)

    assert final_high.status is JobStatus.COMPLETED
    bulk_now = stack.producer.status(bulk.id)
    assert bulk_now.status is JobStatus.IN_PROGRESS
    assert bulk_now.finished < bulk.total / 2
    stack.producer.cancel(bulk.id)
