"""A priority chunk's feeder goes back to Celery once its rows are stored (fast calls) or
once their calls are sent (slow ones): the engine in this process, on a real database and the
mock upstream."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from producers import Producer
from producers.endings import Endings
from routing.catalog import load_catalog
from schemas.jobs import ChunkMessage, JobStatus, RequestState
from schemas.keys import Tier
from schemas.settings import read_secret
from storage import get_job, make_engine
from tests.stack import Stack
from workers.engine import Engine


@pytest.fixture
def engine(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setenv("BATCHYARD_TEST_KEY", "sk-test")
    db = make_engine(stack.settings.database_url)
    running = Engine(stack.settings, db, load_catalog(stack.settings.config, read_secret),
                     endings=Endings(stack.settings.redis_url))
    yield running
    running.stop(grace_s=5)
    db.dispose()


def _realtime_job(producer: Producer) -> ChunkMessage:
    job = producer.submit(["ping"], model="small", tier="realtime")
    return ChunkMessage(job_id=job.id, seqs=(0,), tier=Tier.REALTIME)


def test_a_fast_call_is_stored_and_its_job_ended_before_the_feeder_returns(
        stack: Stack, engine: Engine) -> None:
    for _ in range(3):  # the lingering feeder's lock is given back each time
        msg = _realtime_job(stack.producer)

        assert engine.accept(msg) == 1

        assert get_job(stack.producer.engine, msg.job_id).status is JobStatus.COMPLETED


def test_a_slow_call_does_not_hold_the_feeder(stack: Stack, engine: Engine) -> None:
    httpx.post(f"{stack.mock_url}/_mock/config", json={"latency_ms": 3000}).raise_for_status()
    msg = _realtime_job(stack.producer)

    assert engine.accept(msg) == 1

    assert get_job(stack.producer.engine, msg.job_id).status is JobStatus.IN_PROGRESS
    done = stack.producer.wait(msg.job_id, timeout=30)
    assert done.status is JobStatus.COMPLETED and done.counts[RequestState.SUCCEEDED] == 1
