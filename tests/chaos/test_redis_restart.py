"""Redis losing messages: restarted with every key gone, down at submit, or dropping chunks.

The database is the truth: the reconciler notices the lost epoch key and publishes every queued
row again, deferred rows come back when due, workers and producers reconnect by themselves, a
job the broker did not take is published once it is old enough, and queued rows of a tier
whose queue ran dry without them are published again.
"""

from __future__ import annotations

import httpx
import pytest
import redis

from bench.chaos import RedisServer, audit_job
from producers import Producer
from schemas.jobs import JobStatus
from schemas.keys import EPOCH_KEY, Tier, queue_name
from tests.helpers import wait_for
from tests.stack import Stack


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_redis_restart_that_loses_every_key_loses_no_request(
        chaos_stack: Stack, private_redis: RedisServer) -> None:
    stack = chaos_stack
    httpx.post(f"{stack.mock_url}/_mock/config",
               json={"latency_ms": 300, "throttle_rate": 0.1, "seed": 3}).raise_for_status()
    for _ in range(2):
        stack.start_worker("--max-in-flight", "32")
    client = redis.Redis.from_url(private_redis.url)
    wait_for(lambda: client.exists(EPOCH_KEY), 30, "the reconciler's first pass")
    job = stack.producer.submit([f"question {i}" for i in range(600)], model="small")
    wait_for(lambda: stack.producer.status(job.id).finished >= 100, 60, "some progress")

    private_redis.restart(down_s=1.0)  # every queued chunk, deferral and lock is gone
    final = stack.producer.wait(job.id, timeout=90)
    after = stack.producer.submit([f"after {i}" for i in range(50)], model="small")
    after_final = stack.producer.wait(after.id, timeout=60)

    assert final.status is JobStatus.COMPLETED
    audit = audit_job(stack.producer.engine, job.id, [f"request-{i}" for i in range(1, 601)])
    assert audit.problems() == [] and audit.succeeded == 600
    assert after_final.status is JobStatus.COMPLETED  # the producer and workers reconnected
    assert all(w.proc.poll() is None for w in stack.workers)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_job_the_broker_did_not_take_is_stored_and_published_by_the_reconciler(
        chaos_stack: Stack, private_redis: RedisServer) -> None:
    stack = chaos_stack
    # a grace longer than the failed publish's retries: the job submit returns is the one it
    # stored, not already published by the reconciler and run meanwhile
    stack.start_worker(BATCHYARD_WORKER__DISPATCH_GRACE_S="3")
    client = redis.Redis.from_url(private_redis.url)
    wait_for(lambda: client.exists(EPOCH_KEY), 30, "the reconciler's first pass")
    cut_off = Producer(stack.settings.model_copy(update={"redis_url": "redis://127.0.0.1:9/0"}))

    job = cut_off.submit([f"question {i}" for i in range(100)], model="small")
    final = stack.producer.wait(job.id, timeout=60)

    assert job.status is JobStatus.IN_PROGRESS and job.total == 100  # stored, not lost
    assert final.status is JobStatus.COMPLETED
    audit = audit_job(stack.producer.engine, job.id, [f"request-{i}" for i in range(1, 101)])
    assert audit.problems() == [] and audit.succeeded == 100
    cut_off.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_chunks_the_broker_lost_without_restarting_are_run_anyway(
        chaos_stack: Stack, private_redis: RedisServer) -> None:
    stack = chaos_stack
    client = redis.Redis.from_url(private_redis.url)
    stack.start_worker()
    wait_for(lambda: client.exists(EPOCH_KEY), 30, "the reconciler's first pass")
    stack.workers[0].stop()
    job = stack.producer.submit([f"question {i}" for i in range(200)], model="small")

    assert client.delete(queue_name(Tier.STANDARD)) == 1  # every chunk lost; the epoch stays
    stack.start_worker()
    final = stack.producer.wait(job.id, timeout=60)

    assert final.status is JobStatus.COMPLETED
    audit = audit_job(stack.producer.engine, job.id, [f"request-{i}" for i in range(1, 201)])
    assert audit.problems() == [] and audit.succeeded == 200
