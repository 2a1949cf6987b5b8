"""``wait`` wakes when a job's ending is announced (producers/endings.py), not on its next poll.

The waits below poll once an hour: one can only return within a test's ``TIMEOUT_S`` if the
ending was announced and heard (or the job had ended before its first read).
"""

from __future__ import annotations

import threading

import pytest
import redis

from producers.endings import Endings
from schemas.jobs import JobStatus, JobView
from schemas.keys import job_ended_channel
from tests.helpers import wait_for
from tests.stack import Stack

HOURLY = 3600.0
TIMEOUT_S = 30.0
"""How long a test gives a wait to return: long enough for any machine, and far shorter than
the waits' own poll interval and timeout (an hour)."""


def _wait_in_thread(stack: Stack, job_id: str) -> tuple[threading.Thread, list[JobView]]:
    """``wait`` for ``job_id`` in a thread, polling once an hour; what it returned goes into
    the list (a daemon: a wait that is never woken does not hold the test run up)."""
    seen: list[JobView] = []
    waiter = threading.Thread(
        target=lambda: seen.append(stack.producer.wait(job_id, poll_s=HOURLY, timeout=HOURLY)),
        daemon=True)
    waiter.start()
    return waiter, seen


def test_a_watch_wakes_on_its_jobs_ending_and_not_on_another(redis_url: str) -> None:
    endings = Endings(redis_url)
    with endings.watch("batch_a") as watch:
        endings.announce([("batch_b", "completed")])
        watch.pause(0.3)
        assert not watch.heard
        endings.announce([("batch_a", "completed")])
        watch.pause(TIMEOUT_S)
        assert watch.heard
    endings.close()


def test_announcing_to_an_unreachable_redis_raises_nothing_and_then_waits_a_while(
        monkeypatch: pytest.MonkeyPatch) -> None:
    endings = Endings("redis://127.0.0.1:1/0")  # nothing listens there
    tries: list[str] = []
    real = redis.Redis.pipeline

    def counted(self: redis.Redis, **kwargs: object) -> object:
        tries.append("pipeline")
        return real(self, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(redis.Redis, "pipeline", counted)

    endings.announce([("batch_a", "completed")])
    endings.announce([("batch_b", "completed")])  # within the quiet period: not tried

    assert tries == ["pipeline"]
    endings.close()


def test_wait_returns_as_the_worker_ends_the_job(stack: Stack) -> None:
    stack.start_worker()
    # the call takes 1.5 s, so the job is still running at the wait's first read
    job = stack.producer.submit(["[[mock:latency=1500]] hello"], tier="realtime",
                                model="small")

    waiter, seen = _wait_in_thread(stack, job.id)
    waiter.join(TIMEOUT_S)

    assert [view.status for view in seen] == [JobStatus.COMPLETED]
    assert [line.custom_id for line in stack.producer.results(job.id)] == ["request-1"]


def test_a_cancel_wakes_a_wait_in_another_thread(stack: Stack, redis_url: str) -> None:
    job = stack.producer.submit(["one", "two"], tier="bulk", model="small")  # no worker runs
    waiter, seen = _wait_in_thread(stack, job.id)
    client = redis.Redis.from_url(redis_url)
    channel = job_ended_channel(job.id)
    wait_for(lambda: dict(client.pubsub_numsub(channel)).get(channel.encode()), 10,
             "the waiter to subscribe")

    stack.producer.cancel(job.id)

    waiter.join(TIMEOUT_S)
    assert [view.status for view in seen] == [JobStatus.CANCELLED]


def test_wait_polls_when_redis_does_not_answer(stack: Stack) -> None:
    stack.start_worker()
    job = stack.producer.submit(["[[mock:latency=500]] hello"], tier="realtime",
                                model="small")
    stack.producer.endings = Endings("redis://127.0.0.1:1/0")  # nothing listens there

    final = stack.producer.wait(job.id, poll_s=0.05, timeout=TIMEOUT_S)

    assert final.status is JobStatus.COMPLETED
