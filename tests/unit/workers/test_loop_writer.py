"""The loop writer (workers/loop_writer.py) against a real PostgreSQL: a result written from
the engine's loop is stored, counted and announced once; whatever goes wrong, the outcome goes
to the writer instead, and is still counted once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import psycopg
import pytest
from sqlalchemy import Engine

from schemas.chat import Usage
from schemas.jobs import JobEnding, JobStatus, RequestState
from schemas.keys import Tier
from schemas.outcomes import Outcome, OutcomeKind
from storage import NewJob, claim, create_job, get_job, make_engine, record
from tests.helpers import wait_for
from workers import loop_writer
from workers.engine import new_loop
from workers.loop_writer import LoopWriter

T = TypeVar("T")
COST = Decimal("0.000123456789")


class Calls:
    """What a loop writer handed on: slots given back, endings, outcomes for the writer."""

    def __init__(self) -> None:
        self.written: list[int] = []
        self.ended: list[JobEnding] = []
        self.fallback: list[Outcome] = []

    def writer(self, db: Engine) -> LoopWriter:
        async def on_finished(ended: Sequence[JobEnding]) -> None:
            self.ended.extend(ended)
        return LoopWriter(db, on_written=self.written.append, on_finished=on_finished,
                          fallback=self.fallback.append)


@pytest.fixture
def db(postgres_engine: Engine) -> Engine:
    return postgres_engine


@pytest.fixture
def run() -> Iterator[Callable[[Coroutine[Any, Any, T]], T]]:
    """Runs a coroutine on the engine's kind of loop (uvloop), as the worker does."""
    loop = new_loop("uvloop")
    yield loop.run_until_complete
    loop.close()


def _job(db: Engine, job_id: str, n: int) -> str:
    rows = [(f"c{i}", "m", '{"model":"m","messages":[{"role":"user","content":"x"}]}')
            for i in range(n)]
    create_job(db, NewJob(job_id, Tier.REALTIME), rows, batch=10, check=lambda conn: None)
    claim(db, job_id, list(range(n)), "w1", lease_s=60, now=time.time())
    return job_id


def _success(job_id: str, seq: int) -> Outcome:
    return Outcome(kind=OutcomeKind.SUCCEEDED, job_id=job_id, seq=seq, claim="w1",
                   status_code=200, response="{}",
                   usage=Usage(prompt_tokens=10, completion_tokens=5), cost=COST)


def _loop_writer_pids(db: Engine) -> list[int]:
    with db.connect() as conn:
        return list(conn.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %(name)s",
            {"name": loop_writer.APPLICATION_NAME}).scalars())


def test_a_result_written_from_the_loop_is_stored_counted_and_announced_once(
        db: Engine, run: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    job = _job(db, "batch_loop1", 1)
    calls = Calls()
    writer = calls.writer(db)

    outcome = _success(job, 0)
    assert writer.takes(outcome)
    run(writer.write(outcome))
    run(writer.write(outcome))  # written again: the row is terminal, nothing moves
    run(writer.close())

    view = get_job(db, job)
    assert view.status is JobStatus.COMPLETED
    assert (view.counts[RequestState.SUCCEEDED], view.cost, view.prompt_tokens) == (1, COST, 10)
    assert calls.written == [1, 1]  # each write gives its slot back
    assert calls.fallback == []
    [ended] = calls.ended
    assert (ended.id, ended.status, ended.succeeded, ended.cost) == (
        job, JobStatus.COMPLETED, 1, COST)
    assert ended.completed_at == view.completed_at
    assert not writer.takes(_success(job, 0))  # closed


def test_it_leaves_deferrals_to_the_writer(db: Engine) -> None:
    writer = Calls().writer(db)
    deferred = Outcome(kind=OutcomeKind.DEFERRED, job_id="batch_x", seq=0, claim="w1",
                       not_before=time.time())
    assert not writer.takes(deferred)


def test_sqlite_is_refused_by_name(sqlite_url: str) -> None:
    with pytest.raises(ValueError, match="PostgreSQL, not sqlite"):
        Calls().writer(make_engine(sqlite_url))


def test_a_write_on_a_lost_connection_goes_to_the_writer_then_a_new_connection_is_used(
        db: Engine, run: Callable[[Coroutine[Any, Any, None]], None],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop_writer, "RETRY_AFTER_S", 0.2)
    job = _job(db, "batch_loop3", 3)
    calls = Calls()
    writer = calls.writer(db)
    run(writer.write(_success(job, 0)))
    [pid] = _loop_writer_pids(db)
    with db.connect() as conn:  # the server drops the loop writer's connection
        conn.exec_driver_sql("SELECT pg_terminate_backend(%(pid)s)", {"pid": pid})
        conn.commit()

    run(writer.write(_success(job, 1)))
    assert [o.seq for o in calls.fallback] == [1]
    assert not writer.takes(_success(job, 2))  # backing off: the writer takes the next ones
    record(db, calls.fallback)  # what the writer does with it

    wait_for(lambda: writer.takes(_success(job, 2)), 10, "the back-off to end")
    run(writer.write(_success(job, 2)))
    run(writer.close())

    assert [o.seq for o in calls.fallback] == [1]
    assert calls.written == [1, 1]  # the write that failed gave no slot back: the writer does
    view = get_job(db, job)
    assert (view.status, view.counts[RequestState.SUCCEEDED], view.cost) == (
        JobStatus.COMPLETED, 3, 3 * COST)
    assert [e.id for e in calls.ended] == [job]


def test_a_write_held_by_a_lock_is_given_up_and_the_writers_copy_counts_once(
        db: Engine, postgres_url: str, run: Callable[[Coroutine[Any, Any, None]], None],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop_writer, "TIMEOUT_S", 0.5)
    job = _job(db, "batch_loop4", 2)
    calls = Calls()
    writer = calls.writer(db)
    locker = psycopg.connect(postgres_url)
    locker.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (job,))  # held until rollback

    async def held() -> None:
        write = asyncio.ensure_future(writer.write(_success(job, 0)))
        await asyncio.sleep(0)  # the write has started and waits for the lock
        assert not writer.takes(_success(job, 1))  # one write at a time
        await write  # given up after TIMEOUT_S: the writer has the outcome at once
        assert [o.seq for o in calls.fallback] == [0]
        assert not writer.takes(_success(job, 1))  # until the statement is stopped
        await writer.close()  # waits for that

    run(held())
    locker.rollback()
    locker.close()
    assert [o.seq for o in calls.fallback] == [0]
    assert calls.written == [] and calls.ended == []
    with db.connect() as conn:  # the server statement was cancelled, not left waiting
        assert conn.exec_driver_sql(
            "SELECT state FROM requests WHERE job_id = %(job)s AND seq = 0",
            {"job": job}).scalar() == "running"

    record(db, [*calls.fallback, _success(job, 1)])
    view = get_job(db, job)
    assert (view.status, view.counts[RequestState.SUCCEEDED], view.cost) == (
        JobStatus.COMPLETED, 2, 2 * COST)


def test_a_cancelled_write_still_goes_to_the_writer(
        db: Engine, postgres_url: str, run: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    job = _job(db, "batch_loop5", 1)
    calls = Calls()
    writer = calls.writer(db)
    locker = psycopg.connect(postgres_url)
    locker.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (job,))

    async def cancelled() -> None:
        write = asyncio.ensure_future(writer.write(_success(job, 0)))
        await asyncio.sleep(0)
        write.cancel()
        with pytest.raises(asyncio.CancelledError):
            await write
        assert [o.seq for o in calls.fallback] == [0]
        await writer.close()

    run(cancelled())
    locker.rollback()
    locker.close()
    record(db, calls.fallback)
    assert get_job(db, job).counts[RequestState.SUCCEEDED] == 1
