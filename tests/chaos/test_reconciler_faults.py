"""The reconciler outlives the faults it repairs, and finds messages the broker lost.

A reconciler thread that died, a "Redis lost its data" pass marked done before it finished, or
a message lost without Redis restarting would leave queued requests without a message for
good; these tests drive the reconciler directly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import pytest
import redis
from kombu.exceptions import OperationalError

from schemas.keys import EPOCH_KEY, KOMBU_UNACKED_KEY, Tier, queue_name
from schemas.settings import Settings
from storage import NewJob, create_job, make_engine, mark_dispatched
from tests.helpers import wait_for
from workers.reconciler import Reconciler


class FlakyPublisher:
    """Fails the first ``failures`` publishes with ``error``, then records what it is given."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.published: list[int] = []

    def publish(self, job_id: str, tier: Tier, seqs: Sequence[int], chunk_size: int) -> int:
        if self.failures > 0:
            self.failures -= 1
            raise self.error
        self.published.extend(seqs)
        return 1


def _reconciler(sqlite_url: str, redis_url: str, publisher: FlakyPublisher,
                jobs: int) -> Reconciler:
    settings = Settings(database_url=sqlite_url, redis_url=redis_url)
    settings.worker.reconcile_interval_s = 0.05
    db = make_engine(sqlite_url)
    for n in range(jobs):
        rows = [(f"c{i}", "small", "{}") for i in range(10)]
        create_job(db, NewJob(id=f"batch_{n}", tier=Tier.BULK), rows, batch=100,
                   check=lambda conn: None)
    return Reconciler(settings, db, publisher)  # type: ignore[arg-type]


def test_a_lost_broker_pass_cut_short_is_done_again_in_full(sqlite_url: str, redis_url: str
                                                            ) -> None:
    publisher = FlakyPublisher(1, OperationalError("connection refused"))
    reconciler = _reconciler(sqlite_url, redis_url, publisher, jobs=2)

    with pytest.raises(OperationalError):
        reconciler.tick()  # the broker fails after Redis came back empty
    counts = reconciler.tick()

    assert counts["lost_broker"] == 20
    assert sorted(publisher.published) == sorted(list(range(10)) * 2)
    assert redis.Redis.from_url(redis_url).exists(EPOCH_KEY)


@pytest.mark.parametrize("error", [OperationalError("broker down"), RuntimeError("a bug")])
def test_the_reconciler_thread_survives_any_failed_pass(
        sqlite_url: str, redis_url: str, error: Exception, caplog: pytest.LogCaptureFixture
        ) -> None:
    publisher = FlakyPublisher(3, error)
    reconciler = _reconciler(sqlite_url, redis_url, publisher, jobs=1)
    caplog.set_level(logging.WARNING, logger="workers.reconciler")

    reconciler.start()
    try:
        wait_for(lambda: len(publisher.published) == 10, 10, "the pass after three failures")
    finally:
        reconciler.stop()

    failed = [r for r in caplog.records if "reconciler pass failed" in r.getMessage()]
    assert len(failed) == 3


def _dispatched_reconciler(sqlite_url: str, redis_url: str, publisher: FlakyPublisher
                           ) -> Reconciler:
    """One dispatched bulk job of ten queued rows, and an epoch: no other rule fires."""
    reconciler = _reconciler(sqlite_url, redis_url, publisher, jobs=1)
    mark_dispatched(make_engine(sqlite_url), "batch_0")
    redis.Redis.from_url(redis_url).set(EPOCH_KEY, "1")
    return reconciler


def test_queued_rows_whose_messages_were_lost_are_published_again(sqlite_url: str,
                                                                  redis_url: str) -> None:
    publisher = FlakyPublisher(0, RuntimeError())
    reconciler = _dispatched_reconciler(sqlite_url, redis_url, publisher)

    counts = reconciler.tick()  # the bulk queue is empty and nothing is unacknowledged

    assert counts["stranded"] == 10 and sorted(publisher.published) == list(range(10))


@pytest.mark.parametrize("where", ["queued", "unacknowledged"])
def test_queued_rows_are_left_alone_while_their_tier_holds_a_message(
        sqlite_url: str, redis_url: str, where: str) -> None:
    publisher = FlakyPublisher(0, RuntimeError())
    reconciler = _dispatched_reconciler(sqlite_url, redis_url, publisher)
    client = redis.Redis.from_url(redis_url)
    if where == "queued":
        client.lpush(queue_name(Tier.BULK), "a message")
    else:
        client.hset(KOMBU_UNACKED_KEY, "tag", json.dumps([{}, "x", queue_name(Tier.BULK)]))

    counts = reconciler.tick()

    assert counts["stranded"] == 0 and publisher.published == []
