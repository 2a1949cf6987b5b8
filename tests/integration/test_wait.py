"""``wait`` wakes when a job's ending is announced (producers/endings.py), not on its next poll.

The waits below poll once an hour: one can only return within a test's ``TIMEOUT_S`` if the
ending was announced and heard (or the job had ended before its first read).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading

import pytest
import redis

from producers import endings as endings_module
from producers.endings import Endings
from schemas.jobs import JobEnding, JobStatus, JobView
from schemas.keys import job_ended_channel
from storage import cancel_job
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


def _ending(job_id: str) -> JobEnding:
    return JobEnding(id=job_id, status=JobStatus.COMPLETED, succeeded=1, failed=0, cancelled=0,
                     expired=0, prompt_tokens=3, completion_tokens=2, cost="0.000001")


def _watched(endings: Endings, job_id: str) -> None:
    wait_for(lambda: endings.watching(job_id), 10, "the waiter to watch its job")


def _received(admin: redis.Redis) -> int:
    return int(admin.info("stats")["total_connections_received"])


def test_a_watch_wakes_on_its_jobs_ending_and_not_on_another(redis_url: str) -> None:
    endings = Endings(redis_url)
    with endings.watch("batch_a") as watch:
        endings.announce([_ending("batch_b")])
        watch.pause(0.3)
        assert not watch.heard
        endings.announce([_ending("batch_a")])
        watch.pause(TIMEOUT_S)
        assert watch.heard
        assert watch.ending == _ending("batch_a")
    endings.close()


def test_concurrent_watches_share_one_connection_and_each_hears_its_own_job(
        redis_url: str) -> None:
    endings = Endings(redis_url)
    admin = redis.Redis.from_url(redis_url)
    ids = [f"batch_{i:04d}" for i in range(500)]
    endings.announce([_ending("batch_nobody")])  # the announcing connection, opened now
    before = _received(admin)

    with contextlib.ExitStack() as stack:
        watches = {job_id: stack.enter_context(endings.watch(job_id)) for job_id in ids}
        assert _received(admin) - before == 1  # 500 watches, one subscribed connection
        announced = ids[::2]
        endings.announce([_ending(job_id) for job_id in announced])
        for job_id in announced:  # heard in the order announced
            watches[job_id].pause(TIMEOUT_S)
            assert watches[job_id].ending == _ending(job_id)
        # the last announced ending was handed out: any other would have been before it
        assert [job_id for job_id in ids[1::2] if watches[job_id].heard] == []

    with endings.watch("batch_next") as watch:  # the next wait: the same connection
        endings.announce([_ending("batch_next")])
        watch.pause(TIMEOUT_S)
    assert watch.ending == _ending("batch_next")
    assert _received(admin) - before == 1
    endings.close()
    admin.close()


def test_a_listener_whose_connection_the_server_closed_is_replaced(redis_url: str) -> None:
    """A restart or an idle timeout closes the listener's connection: its watches poll for
    the rest of their waits, and the next watch is heard on a new connection."""
    endings = Endings(redis_url)
    admin = redis.Redis.from_url(redis_url)
    with endings.watch("batch_a") as lost:
        for client in admin.client_list():
            if client["cmd"] == "psubscribe":  # the listener's last command
                admin.client_kill(client["addr"])
        wait_for(lambda: not endings.watching("batch_a"), 10, "the listener to stop")

        with endings.watch("batch_b") as watch:
            endings.announce([_ending("batch_a"), _ending("batch_b")])
            watch.pause(TIMEOUT_S)
        assert watch.ending == _ending("batch_b")
        assert not lost.heard  # its listener is gone: it reads the job on its next poll
    endings.close()
    admin.close()


def test_a_listener_with_no_watch_closes_its_connection(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(endings_module, "LISTEN_IDLE_S", 0.0)
    monkeypatch.setattr(endings_module, "READ_TIMEOUT_S", 0.05)
    endings = Endings(redis_url)
    admin = redis.Redis.from_url(redis_url)

    def listening() -> bool:
        return any(client["cmd"] == "psubscribe" for client in admin.client_list())

    with endings.watch("batch_a"):
        pass
    wait_for(lambda: not listening(), 10, "the idle listener to close")

    with endings.watch("batch_b") as watch:  # the next watch listens again
        endings.announce([_ending("batch_b")])
        watch.pause(TIMEOUT_S)
    assert watch.ending == _ending("batch_b")
    endings.close()
    admin.close()


def test_a_listener_hearing_endings_all_the_time_still_closes_when_idle(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Other processes' jobs end all the time on a busy cluster: a producer that waited once
    must not stay subscribed to all of them."""
    monkeypatch.setattr(endings_module, "LISTEN_IDLE_S", 0.0)
    endings = Endings(redis_url)
    admin = redis.Redis.from_url(redis_url)

    def listening() -> bool:
        endings.announce([_ending("batch_elsewhere")])  # before each look: never a quiet second
        return any(client["cmd"] == "psubscribe" for client in admin.client_list())

    with endings.watch("batch_a"):
        pass
    wait_for(lambda: not listening(), 10, "the idle listener to close")
    endings.close()
    admin.close()


def test_a_channel_name_that_is_not_text_does_not_deafen_the_process(redis_url: str) -> None:
    endings = Endings(redis_url)
    admin = redis.Redis.from_url(redis_url)
    with endings.watch("batch_a") as watch:
        admin.publish(job_ended_channel("batch_\xff").encode("latin-1"), b"{}")
        endings.announce([_ending("batch_a")])
        watch.pause(TIMEOUT_S)
    assert watch.ending == _ending("batch_a")
    endings.close()
    admin.close()


def test_a_child_forked_while_the_listener_starts_can_wait(redis_url: str) -> None:
    """A thread of the parent may be starting the listener (holding its lock for a round
    trip) when another forks: the child must not inherit the lock held forever."""
    endings = Endings(redis_url)
    with endings._lock:  # as a thread starting the listener would
        code = _child_hears_its_own_job(endings)
    assert code == 0
    endings.close()


def _child_hears_its_own_job(endings: Endings) -> int:
    """Fork; the child watches a job of its own and exits 0 if it heard its ending (a hang
    ends it by an alarm); the child's exit code."""
    child = os.fork()
    if child == 0:
        code = 1
        try:
            signal.alarm(int(TIMEOUT_S))  # a hang ends the child, not the test run
            with endings.watch("batch_child") as watch:
                endings.announce([_ending("batch_child")])
                watch.pause(TIMEOUT_S)
                code = 0 if watch.ending == _ending("batch_child") else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_forked_child_listens_on_its_own_connection(redis_url: str) -> None:
    endings = Endings(redis_url)
    with endings.watch("batch_a"):
        pass  # the listener, inherited by the child, stays the parent's
    code = _child_hears_its_own_job(endings)  # on a connection of its own
    with endings.watch("batch_parent") as watch:
        endings.announce([_ending("batch_parent")])
        watch.pause(TIMEOUT_S)

    assert code == 0
    assert watch.ending == _ending("batch_parent")
    endings.close()


def test_a_watch_that_ends_after_its_producer_closed_leaves_no_connection_open(
        redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    before = admin.info("clients")["connected_clients"]
    endings = Endings(redis_url)

    with endings.watch("batch_a"):
        endings.close()  # say, another thread closing the producer during a wait

    wait_for(lambda: admin.info("clients")["connected_clients"] == before, 10,
             "the watch's connection to close")
    admin.close()


def test_announcing_to_an_unreachable_redis_raises_nothing_and_then_waits_a_while(
        monkeypatch: pytest.MonkeyPatch) -> None:
    endings = Endings("redis://127.0.0.1:1/0")  # nothing listens there
    tries: list[str] = []
    real = redis.Redis.pipeline

    def counted(self: redis.Redis, **kwargs: object) -> object:
        tries.append("pipeline")
        return real(self, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(redis.Redis, "pipeline", counted)

    endings.announce([_ending("batch_a")])
    endings.announce([_ending("batch_b")])  # within the quiet period: not tried

    assert tries == ["pipeline"]
    endings.close()


def test_an_ending_announced_from_an_event_loop_wakes_its_watch(redis_url: str) -> None:
    """The engine's loop writer announces with ``announce_async`` (workers/loop_writer.py)."""
    endings = Endings(redis_url)

    async def announce(*ended: JobEnding) -> None:
        await endings.announce_async(ended)
        await endings.close_async()

    with endings.watch("batch_a") as watch:
        asyncio.run(announce(_ending("batch_a")))
        watch.pause(TIMEOUT_S)
        assert watch.ending == _ending("batch_a")
    with endings.watch("batch_c") as watch:  # several endings: one pipeline
        asyncio.run(announce(_ending("batch_b"), _ending("batch_c")))
        watch.pause(TIMEOUT_S)
        assert watch.ending == _ending("batch_c")
    endings.close()


def test_announcing_from_an_event_loop_to_an_unreachable_redis_raises_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    endings = Endings("redis://127.0.0.1:1/0")  # nothing listens there

    async def announce() -> None:
        await endings.announce_async([_ending("batch_a")])
        await endings.announce_async([_ending("batch_b")])  # quiet now: not tried
        await endings.close_async()

    with caplog.at_level(logging.INFO, logger="producers.endings"):
        asyncio.run(announce())
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "1 job endings not announced"]
    endings.close()


def test_wait_returns_as_the_worker_ends_the_job(stack: Stack) -> None:
    stack.start_worker()
    # the call takes 1.5 s, so the job is still running at the wait's first read
    job = stack.producer.submit(["[[mock:latency=1500]] hello"], tier="realtime",
                                model="small")

    waiter, seen = _wait_in_thread(stack, job.id)
    waiter.join(TIMEOUT_S)

    assert [view.status for view in seen] == [JobStatus.COMPLETED]
    # the view the announced ending gave is the job as the database has it
    assert seen == [stack.producer.status(job.id)]
    assert seen[0].cost > 0 and seen[0].completed_at is not None
    assert [line.custom_id for line in stack.producer.results(job.id)] == ["request-1"]


def test_an_ending_announced_by_status_alone_wakes_a_wait_that_reads_the_job(
        stack: Stack, redis_url: str) -> None:
    """A worker of an earlier version announces the status alone: the wait reads the job."""
    job = stack.producer.submit(["one", "two"], tier="bulk", model="small")  # no worker runs
    waiter, seen = _wait_in_thread(stack, job.id)
    client = redis.Redis.from_url(redis_url)
    _watched(stack.producer.endings, job.id)

    cancel_job(stack.producer.engine, job.id)  # ends the job without announcing it
    client.publish(job_ended_channel(job.id), JobStatus.CANCELLED.value)

    waiter.join(TIMEOUT_S)
    assert seen == [stack.producer.status(job.id)]
    assert seen[0].status is JobStatus.CANCELLED


def test_a_cancel_wakes_a_wait_in_another_thread(stack: Stack) -> None:
    job = stack.producer.submit(["one", "two"], tier="bulk", model="small")  # no worker runs
    waiter, seen = _wait_in_thread(stack, job.id)
    _watched(stack.producer.endings, job.id)

    stack.producer.cancel(job.id)

    waiter.join(TIMEOUT_S)
    assert [view.status for view in seen] == [JobStatus.CANCELLED]
    assert seen == [stack.producer.status(job.id)]


def test_wait_polls_when_redis_does_not_answer(stack: Stack) -> None:
    stack.start_worker()
    job = stack.producer.submit(["[[mock:latency=500]] hello"], tier="realtime",
                                model="small")
    stack.producer.endings = Endings("redis://127.0.0.1:1/0")  # nothing listens there

    final = stack.producer.wait(job.id, poll_s=0.05, timeout=TIMEOUT_S)

    assert final.status is JobStatus.COMPLETED
