"""Job endings and the outbox, against real SQLite and PostgreSQL: every ending writes its
event exactly once, stops what it must, and keeps what finished."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update

from schemas.jobs import JobEnding, JobOptions, JobStatus, RequestState
from schemas.keys import Tier
from schemas.outcomes import Outcome, OutcomeKind
from storage import NewJob, cancel_job, claim, create_job, get_job, make_engine, record
from storage.events import job_events
from storage.jobs import expire_jobs, iter_results, mark_dispatched, settle_stopping
from storage.models import DELIVERIES, JOBS
from storage.recovery import find_undispatched_jobs

BODY = '{"model":"m","messages":[{"role":"user","content":"x"}]}'


@pytest.fixture
def engine(database_url: str) -> Engine:
    return make_engine(database_url)


def _job(engine: Engine, n: int, **options: str) -> str:
    job_id = f"batch_life{n}{len(options)}"
    create_job(engine, NewJob(job_id, Tier.BULK, JobOptions(**options)),
               [(f"c{i}", "m", BODY) for i in range(n)], batch=100, check=lambda conn: None)
    return job_id


def _outcome(job_id: str, seq: int, token: str, kind: OutcomeKind = OutcomeKind.SUCCEEDED,
             **fields: object) -> Outcome:
    return Outcome(kind=kind, job_id=job_id, seq=seq, claim=token, status_code=200,
                   response="{}", **fields)  # type: ignore[arg-type]


def _events(engine: Engine, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(kind.value, data) for kind, data in job_events(engine, job_id)]


def test_a_job_finished_by_many_racing_writers_has_one_completion_event(engine: Engine) -> None:
    job = _job(engine, 1, webhook_url="https://hooks.example.com/x")
    claim(engine, job, [0], "w1", lease_s=60, now=time.time())
    barrier = threading.Barrier(6)
    finished: list[JobEnding] = []

    def write() -> None:
        barrier.wait()
        finished.extend(record(engine, [_outcome(job, 0, "w1")]))

    threads = [threading.Thread(target=write) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert [(e.id, e.status) for e in finished] == [(job, JobStatus.COMPLETED)]
    events = _events(engine, job)
    assert [t for t, _ in events] == ["job.completed"]
    data = events[0][1]
    assert data["request_counts"] == {"total": 1, "succeeded": 1, "failed": 0,  # type: ignore[index]
                                      "cancelled": 0, "expired": 0}
    assert data["results"]["command"].startswith(f"batchyard results {job}")  # type: ignore[index]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(DELIVERIES)).scalar() == 1


def test_a_job_whose_every_request_failed_ends_failed(engine: Engine) -> None:
    job = _job(engine, 2)
    claim(engine, job, [0, 1], "w1", lease_s=60, now=time.time())

    record(engine, [_outcome(job, s, "w1", OutcomeKind.FAILED, error_code="invalid_request")
                    for s in (0, 1)])

    assert get_job(engine, job).status is JobStatus.FAILED
    assert [t for t, _ in _events(engine, job)] == ["job.failed"]


def test_expiry_ends_waiting_requests_and_keeps_what_ran(engine: Engine) -> None:
    job = _job(engine, 4, completion_window="30s")
    claim(engine, job, [0, 1], "w1", lease_s=60, now=time.time())
    record(engine, [_outcome(job, 0, "w1")])

    assert expire_jobs(engine, datetime.now(UTC)) == 0  # not due yet
    assert expire_jobs(engine, datetime.now(UTC) + timedelta(seconds=31)) == 2
    during = get_job(engine, job)
    assert during.status is JobStatus.FINALIZING and during.finalizing_at is not None
    assert claim(engine, job, [2, 3], "w2", lease_s=60, now=time.time()) == []
    record(engine, [_outcome(job, 1, "w1")])  # the call in flight finishes and is kept

    final = get_job(engine, job)
    assert final.status is JobStatus.EXPIRED
    assert final.counts[RequestState.SUCCEEDED] == 2 and final.counts[RequestState.EXPIRED] == 2
    errors = [line.error.code for line in iter_results(engine, job) if line.error]
    assert errors == ["batch_expired", "batch_expired"]
    assert [t for t, _ in _events(engine, job)] == ["job.expired"]


def test_an_expiry_that_ends_a_job_tells_whom_it_ended(engine: Engine) -> None:
    job = _job(engine, 2, completion_window="30s")
    told: list[JobEnding] = []

    assert expire_jobs(engine, datetime.now(UTC) + timedelta(seconds=31),
                       on_ended=told.extend) == 2

    assert [(e.id, e.status, e.expired) for e in told] == [(job, JobStatus.EXPIRED, 2)]
    assert get_job(engine, job).status is JobStatus.EXPIRED


def test_a_retry_scheduled_after_a_cancel_is_ended_not_run(engine: Engine) -> None:
    job = _job(engine, 3)
    now = time.time()
    claim(engine, job, [0, 1], "w1", lease_s=5, now=now)
    cancel_job(engine, job)
    record(engine, [_outcome(job, 0, "w1", OutcomeKind.DEFERRED, not_before=now)])

    told: list[JobEnding] = []
    settle_stopping(engine, datetime.now(UTC), on_ended=told.extend)  # row 0: deferred late
    assert get_job(engine, job).status is JobStatus.CANCELLING  # row 1 is still running
    assert told == []
    settle_stopping(engine, datetime.fromtimestamp(now + 10, UTC),  # its lease lapsed
                    on_ended=told.extend)

    assert [(e.id, e.status, e.cancelled) for e in told] == [(job, JobStatus.CANCELLED, 3)]
    final = get_job(engine, job)
    assert final.status is JobStatus.CANCELLED
    assert final.counts[RequestState.CANCELLED] == 3
    assert [t for t, _ in _events(engine, job)] == ["job.cancelled"]


def test_status_estimates_the_time_left_from_the_observed_rate(engine: Engine) -> None:
    job = _job(engine, 10)
    claim(engine, job, list(range(10)), "w1", lease_s=60, now=time.time())
    record(engine, [_outcome(job, s, "w1") for s in range(5)])
    with engine.begin() as conn:  # the job started 20 s ago: 5 done in 20 s, 5 to go
        conn.execute(update(JOBS).where(JOBS.c.id == job)
                     .values(started_at=datetime.now(UTC) - timedelta(seconds=20)))

    view = get_job(engine, job)

    assert view.eta_seconds is not None and 19 <= view.eta_seconds <= 22
    assert view.progress == 0.5
    record(engine, [_outcome(job, s, "w1") for s in range(5, 10)])
    assert get_job(engine, job).eta_seconds is None


def test_progress_events_are_throttled_and_only_sent_when_progress_moved(engine: Engine
                                                                         ) -> None:
    from storage.events import add_progress_events

    job = _job(engine, 4, webhook_url="https://hooks.example.com/x")
    claim(engine, job, [0, 1, 2, 3], "w1", lease_s=60, now=time.time())
    t0 = datetime.now(UTC)
    assert add_progress_events(engine, 10, t0) == 0  # nothing finished yet
    record(engine, [_outcome(job, 0, "w1")])

    added = [add_progress_events(engine, 10, t0),
             add_progress_events(engine, 10, t0 + timedelta(seconds=5)),   # too soon
             add_progress_events(engine, 10, t0 + timedelta(seconds=11))]  # no change
    record(engine, [_outcome(job, 1, "w1")])
    added.append(add_progress_events(engine, 10, t0 + timedelta(seconds=12)))

    assert added == [1, 0, 0, 1]
    progress = [data for kind, data in _events(engine, job) if kind == "job.progress"]
    assert [p["request_counts"]["succeeded"] for p in progress] == [1, 2]  # type: ignore[index]


@pytest.mark.parametrize("how", ["mark_dispatched", "get_job"])
def test_a_job_marked_dispatched_is_no_longer_left_for_the_reconciler(engine: Engine,
                                                                       how: str) -> None:
    job_id = _job(engine, 2)
    later = datetime.now(UTC) + timedelta(minutes=5)
    left_before = find_undispatched_jobs(engine, older_than=later)

    if how == "mark_dispatched":
        mark_dispatched(engine, job_id)
    else:  # what a producer's submit does once its chunks are published
        view = get_job(engine, job_id, dispatched=True)
        assert (view.id, view.total, view.counts[RequestState.QUEUED]) == (job_id, 2, 2)

    assert left_before == [(job_id, Tier.BULK)]
    assert find_undispatched_jobs(engine, older_than=later) == []  # committed: a new reader
