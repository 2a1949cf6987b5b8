"""Claims, outcomes and job completion against real SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, Update, event, select, text
from sqlalchemy.exc import OperationalError

from schemas.chat import Usage
from schemas.jobs import JobEnding, JobOptions, JobStatus, RequestState
from schemas.keys import Tier
from schemas.outcomes import Outcome, OutcomeKind
from storage import NewJob, cancel_job, claim, create_job, get_job, make_engine, record
from storage.models import JOBS, REQUESTS
from tests.helpers import wait_for


@pytest.fixture
def engine(database_url: str) -> Engine:
    return make_engine(database_url)


def _job(engine: Engine, n: int = 3) -> str:
    rows = [(f"c{i}", "m", '{"model":"m","messages":[{"role":"user","content":"x"}]}')
            for i in range(n)]
    create_job(engine, NewJob(f"batch_test{n}", Tier.BULK), rows, batch=2, check=lambda conn: None)
    return f"batch_test{n}"


def _success(job_id: str, seq: int, token: str, cost: str = "0.000123456789") -> Outcome:
    return Outcome(kind=OutcomeKind.SUCCEEDED, job_id=job_id, seq=seq, claim=token,
                   status_code=200, response="{}", usage=Usage(prompt_tokens=10,
                   completion_tokens=5), cost=Decimal(cost))


def _failure(job_id: str, seq: int, token: str) -> Outcome:
    return Outcome(kind=OutcomeKind.FAILED, job_id=job_id, seq=seq, claim=token,
                   status_code=400, error_code="invalid_request", error_message="bad")


def _ends(endings: Sequence[JobEnding]) -> list[tuple[str, JobStatus]]:
    return [(e.id, e.status) for e in endings]


def test_a_claimed_row_cannot_be_claimed_again_until_its_lease_ends(engine: Engine) -> None:
    job = _job(engine)
    now = time.time()
    first = claim(engine, job, [0, 1], "w1", lease_s=60, now=now)
    again = claim(engine, job, [0, 1, 2], "w2", lease_s=60, now=now)
    after_lease = claim(engine, job, [0], "w3", lease_s=60, now=now + 61)

    assert [r.seq for r in first] == [0, 1]
    assert [r.seq for r in again] == [2]
    assert [(r.seq, r.attempts) for r in after_lease] == [(0, 2)]


@pytest.mark.parametrize("write", ["claim", "dispatched"])
def test_a_lazy_commit_leaves_the_connection_committing_durably(postgres_url: str,
                                                                write: str) -> None:
    """The claim and the dispatched mark do not wait for their commit (storage.db.lazy_commit)
    for their own transaction only: the pooled connection's next statement, say a write of
    results, commits durably."""
    engine = make_engine(postgres_url, pool_size=1, max_overflow=0)
    job = _job(engine)

    if write == "claim":
        assert [r.seq for r in claim(engine, job, [0], "w1", lease_s=60, now=time.time())] == [0]
    else:
        assert get_job(engine, job, dispatched=True).total == 3

    with engine.connect() as conn:  # the pool's one connection, which the write used
        assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
    engine.dispose()


def test_an_outcome_recorded_twice_is_charged_and_counted_once(engine: Engine) -> None:
    job = _job(engine, n=2)
    claim(engine, job, [0, 1], "w1", lease_s=60, now=time.time())

    first = record(engine, [_success(job, 0, "w1"), _success(job, 0, "w1")])
    second = record(engine, [_success(job, 0, "w1"), _success(job, 1, "w1")])
    third = record(engine, [_success(job, 1, "w1")])

    assert first == []
    assert _ends(second) == [(job, JobStatus.COMPLETED)]
    assert third == []
    view = get_job(engine, job)
    assert view.counts[RequestState.SUCCEEDED] == 2
    assert view.cost == Decimal("0.000246913578")
    assert view.prompt_tokens == 20 and view.completion_tokens == 10


def test_the_ending_a_write_returns_is_the_job_as_read_after_it(engine: Engine) -> None:
    job = _job(engine, n=2)
    claim(engine, job, [0, 1], "w1", lease_s=60, now=time.time())
    record(engine, [_success(job, 0, "w1")])
    before = get_job(engine, job)  # what a waiter read while the job ran

    (ending,) = record(engine, [_failure(job, 1, "w1")])

    after = get_job(engine, job)
    assert ending.view(before) == after  # what ``wait`` returns without reading the job
    assert after.status is JobStatus.COMPLETED and after.completed_at is not None
    assert after.counts == {RequestState.SUCCEEDED: 1, RequestState.FAILED: 1,
                            RequestState.CANCELLED: 0, RequestState.EXPIRED: 0}


def _two_jobs_running(engine: Engine) -> tuple[str, str, list[Outcome]]:
    """Two jobs with every row claimed, and a batch finishing them all in a jumbled order."""
    low, high = _job(engine, n=2), _job(engine, n=3)
    claim(engine, low, [0, 1], "w1", lease_s=60, now=time.time())
    claim(engine, high, [0, 1, 2], "w1", lease_s=60, now=time.time())
    batch = [_success(high, 2, "w1"), _success(low, 1, "w1"), _success(high, 0, "w1"),
             _success(high, 1, "w1"), _success(low, 0, "w1")]
    return low, high, batch


def test_a_batch_over_several_jobs_updates_them_in_job_id_order(sqlite_url: str) -> None:
    # Two writers locking the same jobs' counter rows in opposite orders deadlock on
    # PostgreSQL (one is aborted and retried): every batch takes them in job id order.
    # SQLite writes each job's counters and ending as statements of their own.
    engine = make_engine(sqlite_url)
    low, high, batch = _two_jobs_running(engine)
    jobs_updated: list[str] = []

    @event.listens_for(engine, "before_execute")
    def _seen(_conn: object, stmt: object, multiparams: Any, params: Any, _opts: object) -> None:
        if isinstance(stmt, Update) and stmt.table.name == "jobs":
            values = multiparams[0] if multiparams else params
            jobs_updated.append(values.get("n_job") or values.get("f_job"))

    finished = record(engine, batch)

    assert _ends(finished) == [(low, JobStatus.COMPLETED), (high, JobStatus.COMPLETED)]
    assert jobs_updated == [low, low, high, high]  # counters, then the ending, job by job
    assert get_job(engine, high).counts[RequestState.SUCCEEDED] == 3


def test_a_batch_over_several_jobs_locks_them_in_job_id_order(postgres_url: str) -> None:
    # PostgreSQL's one statement locks the jobs in id order: while another transaction holds
    # the higher job, the writer waits for it holding the lower one, never the other way.
    engine = make_engine(postgres_url)
    low, high, batch = _two_jobs_running(engine)
    with ThreadPoolExecutor(1) as pool:
        with engine.connect() as holder:  # released (rolled back) before the pool is awaited
            holder.execute(select(JOBS.c.id).where(JOBS.c.id == high).with_for_update())
            writing = pool.submit(record, engine, batch)
            wait_for(lambda: writing.done() or _lock_waiters(engine) > 0, 30, "the writer to wait")
            with engine.connect() as probe, pytest.raises(OperationalError, match="could not"):
                probe.execute(select(JOBS.c.id).where(JOBS.c.id == low)
                              .with_for_update(nowait=True))
        finished = writing.result(timeout=30)

    assert _ends(finished) == [(low, JobStatus.COMPLETED), (high, JobStatus.COMPLETED)]
    assert get_job(engine, high).counts[RequestState.SUCCEEDED] == 3


def test_a_batch_of_several_parts_never_holds_a_job_while_it_waits_for_a_row(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A part's statement locks its jobs; were the next part in the same transaction, its rows
    # would be locked after a job, and a writer holding one of those rows and waiting for the
    # job would deadlock with it. Each part commits before the next starts.
    monkeypatch.setattr("storage.requests.ROWS_PER_STATEMENT", 1)
    engine = make_engine(postgres_url)
    job = _job(engine, n=2)
    claim(engine, job, [0, 1], "w1", lease_s=60, now=time.time())
    with ThreadPoolExecutor(1) as pool:
        with engine.connect() as holder:  # released (rolled back) before the pool is awaited
            holder.execute(select(REQUESTS.c.seq).where(REQUESTS.c.job_id == job,
                                                        REQUESTS.c.seq == 1).with_for_update())
            writing = pool.submit(record, engine, [_success(job, 0, "w1"),
                                                   _success(job, 1, "w1")])
            wait_for(lambda: writing.done() or _lock_waiters(engine) > 0, 30, "the writer to wait")
            with engine.connect() as probe:  # the job is free while the writer waits
                probe.execute(select(JOBS.c.id).where(JOBS.c.id == job)
                              .with_for_update(nowait=True))
        finished = writing.result(timeout=30)

    assert _ends(finished) == [(job, JobStatus.COMPLETED)]
    view = get_job(engine, job)
    assert view.counts[RequestState.SUCCEEDED] == 2 and view.cost == Decimal("0.000246913578")


def test_a_write_does_not_wait_for_a_transaction_that_only_refers_to_the_job(
        postgres_url: str) -> None:
    # Inserting a row that refers to a job (an event: the progress events do) takes FOR KEY
    # SHARE on it until commit; the write locks the job as a plain UPDATE does, which that
    # lock does not block (FOR UPDATE would wait for the other transaction to end).
    engine = make_engine(postgres_url)
    job = _job(engine, n=1)
    claim(engine, job, [0], "w1", lease_s=60, now=time.time())
    with ThreadPoolExecutor(1) as pool, engine.connect() as holder:
        holder.execute(select(JOBS.c.id).where(JOBS.c.id == job)
                       .with_for_update(read=True, key_share=True))
        writing = pool.submit(record, engine, [_success(job, 0, "w1")])
        finished = writing.result(timeout=30)  # while the holder still holds its lock

    assert _ends(finished) == [(job, JobStatus.COMPLETED)]


def test_a_cancel_waits_for_a_row_being_written_before_it_locks_the_job(
        postgres_url: str) -> None:
    # A write finishing a row holds the row and then locks its job. A cancel that locked the
    # job first and then waited for that row would deadlock with it: it locks the waiting rows
    # first, and leaves the job free while it waits.
    engine = make_engine(postgres_url)
    job = _job(engine, n=2)
    with ThreadPoolExecutor(1) as pool:
        with engine.connect() as writer:  # stands for a record() between its two locks
            writer.execute(select(REQUESTS.c.seq).where(REQUESTS.c.job_id == job,
                                                        REQUESTS.c.seq == 1).with_for_update())
            cancelling = pool.submit(cancel_job, engine, job)
            wait_for(lambda: cancelling.done() or _lock_waiters(engine) > 0, 30,
                     "the cancel to wait")
            with engine.connect() as probe:  # the job is free while the cancel waits
                probe.execute(select(JOBS.c.id).where(JOBS.c.id == job)
                              .with_for_update(nowait=True))
        cancelling.result(timeout=30)

    view = get_job(engine, job)
    assert (view.status, view.counts[RequestState.CANCELLED]) == (JobStatus.CANCELLED, 2)


def test_a_deferral_the_same_batch_finishes_gives_no_attempt_back(engine: Engine) -> None:
    # A call handed back (a throttled deferral) and then answered, both in one batch: the row
    # ends succeeded, and its attempt stays counted (the call was made).
    job = _job(engine, n=1)
    claim(engine, job, [0], "w1", lease_s=60, now=time.time())
    handed_back = Outcome(kind=OutcomeKind.DEFERRED, job_id=job, seq=0, claim="w1",
                          not_before=time.time() + 30, throttled=True)

    assert _ends(record(engine, [handed_back, _success(job, 0, "w1")])) == [
        (job, JobStatus.COMPLETED)]
    with engine.connect() as conn:
        state, attempts = conn.execute(select(REQUESTS.c.state, REQUESTS.c.attempts).where(
            REQUESTS.c.job_id == job)).one()
    assert (state, attempts) == (RequestState.SUCCEEDED.value, 1)


def test_a_batch_that_fails_after_its_deferrals_leaves_them_unwritten(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # The writer retries a failed batch whole; its deferrals must not have been committed
    # alone before, or a row handed back to this worker meanwhile would be deferred again
    # under its new call.
    import storage.requests as requests_module

    job = _job(engine, n=2)
    claim(engine, job, [0, 1], "w1", lease_s=60, now=time.time())
    batch = [Outcome(kind=OutcomeKind.DEFERRED, job_id=job, seq=0, claim="w1",
                     not_before=time.time() + 30), _success(job, 1, "w1")]
    finishing = "finish_rows" if engine.dialect.name == "sqlite" else "finish_and_count"

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("finish", {}, Exception("the connection dropped"))

    monkeypatch.setattr(requests_module, finishing, failing)
    with pytest.raises(OperationalError):
        record(engine, batch)
    states = get_job(engine, job).counts
    assert states == {RequestState.RUNNING: 2, RequestState.SUCCEEDED: 0,
                      RequestState.FAILED: 0, RequestState.CANCELLED: 0,
                      RequestState.EXPIRED: 0}

    monkeypatch.undo()
    record(engine, batch)
    assert get_job(engine, job).counts[RequestState.DEFERRED] == 1


def _lock_waiters(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")).scalar_one())


def test_a_deferral_from_a_stale_claim_changes_nothing(engine: Engine) -> None:
    job = _job(engine, n=1)
    now = time.time()
    claim(engine, job, [0], "old", lease_s=1, now=now)
    claim(engine, job, [0], "new", lease_s=60, now=now + 2)  # the old lease ran out
    stale = Outcome(kind=OutcomeKind.DEFERRED, job_id=job, seq=0, claim="old",
                    not_before=now + 100)
    record(engine, [stale])

    assert claim(engine, job, [0], "third", lease_s=60, now=now + 3) == []
    assert get_job(engine, job).counts[RequestState.RUNNING] == 1


def test_a_deferred_row_is_claimable_only_once_due(engine: Engine) -> None:
    job = _job(engine, n=1)
    now = time.time()
    claim(engine, job, [0], "w1", lease_s=60, now=now)
    record(engine, [Outcome(kind=OutcomeKind.DEFERRED, job_id=job, seq=0, claim="w1",
                            not_before=now + 30)])

    assert claim(engine, job, [0], "w2", lease_s=60, now=now + 5) == []
    assert [r.seq for r in claim(engine, job, [0], "w2", lease_s=60, now=now + 30)] == [0]


def test_cancel_ends_waiting_requests_and_lets_running_ones_finish(engine: Engine) -> None:
    job = _job(engine, n=3)
    claim(engine, job, [0], "w1", lease_s=60, now=time.time())

    cancel_job(engine, job)
    during = get_job(engine, job)
    finished = record(engine, [_success(job, 0, "w1")])

    assert during.status is JobStatus.CANCELLING
    assert during.counts[RequestState.CANCELLED] == 2
    assert _ends(finished) == [(job, JobStatus.CANCELLED)]
    after = get_job(engine, job)
    assert after.counts[RequestState.SUCCEEDED] == 1
    assert claim(engine, job, [1, 2], "w2", lease_s=60, now=time.time()) == []


@pytest.mark.parametrize(("batch", "check_reads"), [(2, True), (10, True), (10, False)])
def test_a_failing_check_leaves_no_job_behind(engine: Engine, batch: int,
                                              check_reads: bool) -> None:
    def reject(conn: object) -> None:
        raise ValueError("bad line")

    rows = [(f"c{i}", "m", "{}") for i in range(5)]
    with pytest.raises(ValueError):
        create_job(engine, NewJob("batch_rolled_back", Tier.BULK), rows, batch=batch,
                   check=reject, check_reads=check_reads)
    from schemas.errors import NotFoundError

    with pytest.raises(NotFoundError):
        get_job(engine, "batch_rolled_back")


@pytest.mark.parametrize(("n", "batch"), [(3, 10), (10, 10), (150, 64), (0, 10)])
def test_a_job_is_stored_whole_whether_its_input_fits_one_batch_or_many(
        engine: Engine, n: int, batch: int) -> None:
    """Small inputs are written in one INSERT each (job, rows), larger ones in batches (COPY
    on PostgreSQL for 64 rows or more): the same job either way."""
    body = '{"model":"m","messages":[{"role":"user","content":"x"}]}'
    rows = [(f"c{i}", "m", body) for i in range(n)]
    seen: list[int] = []

    job_id = f"batch_whole{n}_{batch}"

    def check(conn: Any) -> None:  # runs last, with the job's total already set
        seen.append(conn.execute(select(JOBS.c.total).where(JOBS.c.id == job_id)).scalar_one())

    assert create_job(engine, NewJob(job_id, Tier.BULK), rows, batch=batch, check=check) == n

    view = get_job(engine, job_id)
    assert (view.status, view.total, view.counts.get(RequestState.QUEUED, 0)) == (
        JobStatus.IN_PROGRESS, n, n)
    assert seen == [n]
    with engine.connect() as conn:
        stored = conn.execute(select(REQUESTS.c.seq, REQUESTS.c.custom_id).where(
            REQUESTS.c.job_id == job_id).order_by(REQUESTS.c.seq)).all()
    assert [tuple(r) for r in stored] == [(i, f"c{i}") for i in range(n)]


@pytest.mark.parametrize("n", [1, 3])
def test_a_job_whose_check_reads_nothing_is_stored_whole_in_one_statement(
        engine: Engine, n: int) -> None:
    """``check_reads=False`` (no queue limit): the check runs first, then on PostgreSQL the job
    and its rows are one INSERT, sent without BEGIN and COMMIT. The same job either way."""
    rows = [(f"c{i} \u00e9", "m-\u00df", json.dumps({"model": "m", "messages": [
        {"role": "user", "content": f'line {i}: "quoted" \\ back\nslash \u2713'}]},
        ensure_ascii=False)) for i in range(n)]
    options = JobOptions(metadata={"team": "eval"}, webhook_url="https://example.com/hook")
    job_id = f"batch_one{n}"
    checked: list[int] = []
    sent: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _sent(_c: Any, _cur: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    total = create_job(engine, NewJob(job_id, Tier.REALTIME, options), rows, batch=10,
                       check=lambda conn: checked.append(1), check_reads=False)

    event.remove(engine, "before_cursor_execute", _sent)
    assert total == n and checked == [1]
    view = get_job(engine, job_id)
    assert (view.status, view.tier, view.total, view.counts.get(RequestState.QUEUED, 0)) == (
        JobStatus.IN_PROGRESS, Tier.REALTIME, n, n)
    assert (view.metadata, view.webhook_url) == ({"team": "eval"}, "https://example.com/hook")
    with engine.connect() as conn:
        stored = conn.execute(select(
            REQUESTS.c.seq, REQUESTS.c.custom_id, REQUESTS.c.model, REQUESTS.c.body,
            REQUESTS.c.state, REQUESTS.c.attempts, REQUESTS.c.cost).where(
            REQUESTS.c.job_id == job_id).order_by(REQUESTS.c.seq)).all()
    assert [tuple(r) for r in stored] == [
        (i, custom_id, model, body, RequestState.QUEUED.value, 0, Decimal(0))
        for i, (custom_id, model, body) in enumerate(rows)]
    if engine.dialect.name == "postgresql":
        assert len(sent) == 1 and sent[0].startswith("WITH new_job AS")


def test_a_retried_claim_takes_back_its_own_rows_whose_first_commit_went_unseen(
        engine: Engine) -> None:
    job = _job(engine)
    now = time.time()
    claim(engine, job, [0, 1], "w1", lease_s=300, now=now)  # committed; the reply was lost

    other = claim(engine, job, [0, 1], "w2", lease_s=300, now=now, retry=True)
    again = claim(engine, job, [0, 1, 2], "w1", lease_s=300, now=now, retry=True)

    assert other == []  # another worker's retry never takes a live lease
    assert sorted(r.seq for r in again) == [0, 1, 2]
    assert [r.attempts for r in sorted(again, key=lambda r: r.seq)] == [1, 1, 1]


def test_status_counts_every_state_as_the_rows_are(engine: Engine) -> None:
    """Queued rows are not counted one by one (``total`` less the others): the view must still
    agree with the rows in every state, and leave out the live states that have none."""
    job = _job(engine, n=8)
    now = time.time()
    rows = claim(engine, job, [0, 1, 2, 3, 4], "w1", lease_s=60, now=now)
    assert [r.seq for r in rows] == [0, 1, 2, 3, 4]
    failed = Outcome(kind=OutcomeKind.FAILED, job_id=job, seq=1, claim="w1", status_code=400,
                     error_code="invalid_request", error_message="bad")
    deferred = Outcome(kind=OutcomeKind.DEFERRED, job_id=job, seq=2, claim="w1",
                       not_before=now + 3600, error_code="server_error", error_message="500")
    record(engine, [_success(job, 0, "w1"), failed, deferred])

    view = get_job(engine, job)
    assert view.counts == {RequestState.QUEUED: 3, RequestState.RUNNING: 2,
                           RequestState.DEFERRED: 1, RequestState.SUCCEEDED: 1,
                           RequestState.FAILED: 1, RequestState.CANCELLED: 0,
                           RequestState.EXPIRED: 0}

    cancel_job(engine, job)  # the queued and the deferred end; the running two go on
    assert get_job(engine, job).counts == {
        RequestState.RUNNING: 2, RequestState.SUCCEEDED: 1, RequestState.FAILED: 1,
        RequestState.CANCELLED: 4, RequestState.EXPIRED: 0}


def _rows_read(plan: dict[str, Any]) -> int:
    """Rows of ``requests`` a PostgreSQL plan (EXPLAIN ANALYZE, JSON) read: kept or filtered."""
    read = 0
    if plan.get("Relation Name") == "requests" and "Scan" in plan["Node Type"]:
        read += plan["Actual Rows"] * plan["Actual Loops"] + plan.get("Rows Removed by Filter", 0)
    return read + sum(_rows_read(child) for child in plan.get("Plans", []))


def _statement_of(engine: Engine, prefix: str, action: Any) -> tuple[str, Any]:
    """The SQL and parameters of the one statement starting with ``prefix`` that ``action``
    runs."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if statement.startswith(prefix):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    (statement, parameters), = seen
    return statement, parameters


def _plan_reads(engine: Engine, statement: str, parameters: Any) -> tuple[int, list[str]]:
    """Rows of requests the statement reads (PostgreSQL), or SQLite's query plan, rolled back."""
    with engine.connect() as conn:
        try:
            if engine.dialect.name == "postgresql":
                plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}",
                                            parameters).scalar_one()
                return _rows_read(plan[0]["Plan"]), []
            return 0, [row[-1] for row in conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {statement}", parameters)]
        finally:
            conn.rollback()


def test_a_claim_reads_the_rows_it_claims_not_the_jobs_backlog(engine: Engine) -> None:
    # A new job has no statistics yet, so the planner may think it small; the claim must still
    # look its rows up by key, not read every waiting row of the job and filter them.
    job = _job(engine, n=3000)
    claimed: list[Any] = []

    def take() -> None:
        claimed.extend(claim(engine, job, list(range(1000, 1064)), "w1", lease_s=60,
                             now=time.time()))

    # PostgreSQL's claim is one statement: the UPDATE is its first CTE
    first = "WITH claimed AS" if engine.dialect.name == "postgresql" else "UPDATE requests"
    statement, parameters = _statement_of(engine, first, take)

    # the same claim again (its rows are leased now, so none matches), rolled back
    read, steps = _plan_reads(engine, statement, parameters)

    assert len(claimed) == 64
    if engine.dialect.name == "postgresql":
        assert read <= 2 * len(claimed), f"the claim read {read} rows for 64"
    else:
        assert any("(job_id=? AND seq=?)" in step for step in steps), steps


def test_a_status_reads_the_jobs_live_rows_not_all_of_them(engine: Engine) -> None:
    job = _job(engine, n=3000)
    taken = claim(engine, job, list(range(64)), "w1", lease_s=60, now=time.time())
    record(engine, [_success(job, r.seq, "w1") for r in taken[:60]])
    statement, parameters = _statement_of(engine, "SELECT jobs.id",
                                          lambda: get_job(engine, job))

    read, steps = _plan_reads(engine, statement, parameters)

    assert get_job(engine, job).counts[RequestState.RUNNING] == 4
    if engine.dialect.name == "postgresql":  # the 4 running rows, not the 2,936 queued
        assert read <= 8, f"a status read {read} rows"
    else:
        assert sum("ix_requests_job_live (job_id=? AND state=?)" in step
                   for step in steps) == 2, steps
