"""Statements on psycopg connections of their own (storage/direct.py), against a real
PostgreSQL: the worker's claim there is the engine's claim, row for row; a lost connection
is replaced; a failure is SQLAlchemy's error, as through the engine."""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, bindparam, column, select, table, text, update
from sqlalchemy.exc import OperationalError

from schemas.chat import Usage
from schemas.errors import NotFoundError
from schemas.jobs import JobOptions, RoutingOptions
from schemas.keys import Tier
from schemas.outcomes import Outcome, OutcomeKind
from schemas.tenants import BUDGET_PAUSED, DEFAULT_TENANT
from storage import NewJob, claim, create_job, get_job, make_engine, record
from storage.direct import ThreadConnections, for_psycopg
from storage.models import JOBS
from storage.requests import _CLAIM_IN_ONE
from tests.helpers import wait_for

NAME = "batchyard-test-direct"


@pytest.fixture
def db(postgres_engine: Engine) -> Engine:
    return postgres_engine


@pytest.fixture
def direct(db: Engine) -> Iterator[ThreadConnections]:
    conns = ThreadConnections(db, NAME)
    yield conns
    conns.close()


def _job(db: Engine, job_id: str, n: int) -> str:
    rows = [(f"c{i}", "m", f'{{"model":"m","messages":[{{"role":"user","content":"{i}"}}]}}')
            for i in range(n)]
    options = JobOptions(routing=RoutingOptions(require_tags={"region": "eu"}))
    create_job(db, NewJob(job_id, Tier.HIGH, options=options), rows, batch=100,
               check=lambda conn: None)
    return job_id


def _seen(claimed: list[Any]) -> list[dict[str, Any]]:
    return [c.model_dump(exclude={"job_id"}) for c in claimed]


def _sessions(db: Engine) -> list[int]:
    with db.connect() as conn:
        return list(conn.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %(name)s",
            {"name": NAME}).scalars())


def test_a_direct_claim_is_the_engines_claim(db: Engine, direct: ThreadConnections) -> None:
    via_engine, via_direct = _job(db, "batch_engine", 5), _job(db, "batch_direct", 5)
    now = time.time()

    for job, conns in ((via_engine, None), (via_direct, direct)):
        assert len(claim(db, job, [0, 1, 2], "w1", 60, now, direct=conns)) == 3

    # the same rows, attempts, bodies, routing and tenant, and the same next steps
    results = {}
    for job, conns in ((via_engine, None), (via_direct, direct)):
        results[job] = (
            _seen(claim(db, job, [1, 2, 3, 4], "w1", 60, now, direct=conns)),  # 3, 4 left
            _seen(claim(db, job, [0, 1], "w1", 60, now, retry=True, direct=conns)),  # own
            _seen(claim(db, job, [0], "w2", 60, now + 61, direct=conns)))  # lease over
    assert results[via_direct] == results[via_engine]
    taken, retaken, expired = results[via_direct]
    assert [(c["seq"], c["attempts"]) for c in taken] == [(3, 1), (4, 1)]
    assert [(c["seq"], c["attempts"]) for c in retaken] == [(0, 1), (1, 1)]
    assert [(c["seq"], c["attempts"], c["claim"]) for c in expired] == [(0, 2, "w2")]
    assert taken[0]["routing"] == {"strategy": None, "require_tags": {"region": "eu"}}
    assert get_job(db, via_direct).started_at is not None
    assert claim(db, via_direct, [9], "w1", 60, now, direct=direct) == []


def test_the_direct_claim_reads_the_rows_it_claims_not_the_jobs_backlog(
        db: Engine, direct: ThreadConnections) -> None:
    """Its ``= ANY(array)`` is an index condition as the engine's ``IN`` list is (see
    test_requests.py's test of the same name)."""
    job = _job(db, "batch_big", 3000)
    statement = for_psycopg(_CLAIM_IN_ONE[False])
    seqs = list(range(1000, 1064))
    now = time.time()
    params = {**statement.defaults, "c_job": job, "c_seqs": seqs, "c_first": 1000,
              "c_last": 1063, "c_due": now + 1, "c_now": now, "c_token": "w1",
              "c_until": now + 60, "c_at": get_job(db, job).created_at}
    with db.connect() as conn:
        plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement.sql}",
                                    params).scalar_one()
        conn.rollback()

    def read(node: dict[str, Any]) -> int:
        own = (node["Actual Rows"] * node["Actual Loops"] + node.get("Rows Removed by Filter", 0)
               if node.get("Relation Name") == "requests" and "Scan" in node["Node Type"]
               else 0)
        return own + sum(read(child) for child in node.get("Plans", []))

    assert read(plan[0]["Plan"]) <= 2 * len(seqs)
    assert len(claim(db, job, seqs, "w1", 60, now, direct=direct)) == 64


def test_a_connection_the_server_closed_while_idle_is_replaced(
        db: Engine, direct: ThreadConnections) -> None:
    job = _job(db, "batch_restart", 2)
    assert len(claim(db, job, [0], "w1", 60, time.time(), direct=direct)) == 1
    [pid] = _sessions(db)
    with db.connect() as conn:
        conn.exec_driver_sql("SELECT pg_terminate_backend(%(pid)s)", {"pid": pid})
        conn.commit()
    wait_for(lambda: not _sessions(db), 10, "the backend to end")

    assert len(claim(db, job, [1], "w1", 60, time.time(), direct=direct)) == 1  # no error
    assert len(_sessions(db)) == 1


def test_each_thread_has_its_own_connection_and_close_closes_them(
        db: Engine, direct: ThreadConnections) -> None:
    job = _job(db, "batch_threads", 2)
    claimed = threading.Barrier(3)
    closed = threading.Event()

    def feeder(seq: int) -> None:
        claim(db, job, [seq], "w1", 60, time.time(), direct=direct)
        claimed.wait()
        closed.wait()  # alive (and its connection with it) until the close

    threads = [threading.Thread(target=feeder, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    claimed.wait()
    assert len(_sessions(db)) == 2

    direct.close()
    wait_for(lambda: not _sessions(db), 10, "the connections to close")
    closed.set()
    for t in threads:
        t.join()


def test_an_unreachable_database_raises_sqlalchemys_operational_error() -> None:
    unreachable = make_engine("postgresql://postgres@127.0.0.1:1/test")
    conns = ThreadConnections(unreachable, NAME)
    with pytest.raises(OperationalError, match=r"127\.0\.0\.1"):
        claim(unreachable, "batch_x", [0], "w1", 60, time.time(), direct=conns)


def test_a_statement_that_cannot_be_one_text_is_refused() -> None:
    t = table("t", column("a"))
    assert "= ANY(%(a_1)s)" in for_psycopg(select(t.c.a).where(t.c.a.in_([1, 2]))).sql
    with pytest.raises(ValueError, match="rendered per call"):
        for_psycopg(select(t.c.a).where(t.c.a.not_in([1, 2])))


def test_sqlite_is_refused_by_name(sqlite_url: str) -> None:
    with pytest.raises(ValueError, match="PostgreSQL, not sqlite"):
        ThreadConnections(make_engine(sqlite_url), NAME)


def test_a_thread_that_ends_takes_its_connection_with_it(
        db: Engine, direct: ThreadConnections) -> None:
    job = _job(db, "batch_short", 1)
    worker = threading.Thread(target=claim, args=(db, job, [0], "w1", 60, time.time()),
                              kwargs={"direct": direct})
    worker.start()
    worker.join()
    del worker
    gc.collect()
    wait_for(lambda: not _sessions(db), 10, "the ended thread's connection to close")


def test_a_job_inserted_directly_is_the_job_the_engine_inserts(
        db: Engine, direct: ThreadConnections) -> None:
    options = JobOptions(metadata={"team": "eval", "n": 3}, webhook_url="https://h.example/x",
                         completion_window="24h",
                         routing=RoutingOptions(require_tags={"region": "eu"}))
    rows = [("c0", "m", '{"messages":[]}'), ("c1", "m", '{"messages":[]}')]
    for job_id, conns in (("batch_e", None), ("batch_d", direct)):
        assert create_job(db, NewJob(job_id, Tier.REALTIME, options=options), rows, batch=10,
                          check=lambda conn: None, check_reads=False, direct=conns) == 2

    def seen(job_id: str) -> dict[str, Any]:
        return get_job(db, job_id).model_dump(exclude={"id", "created_at", "expires_at"})

    assert seen("batch_d") == seen("batch_e")
    assert seen("batch_d")["metadata"] == {"team": "eval", "n": 3}
    engine_rows, direct_rows = (
        [(c.seq, c.custom_id, c.body, c.routing) for c in claim(db, j, [0, 1], "w", 60, 0.0)]
        for j in ("batch_e", "batch_d"))
    assert direct_rows == engine_rows


def test_a_connection_past_descriptor_1023_is_kept(db: Engine, direct: ThreadConnections
                                                   ) -> None:
    """``select`` refuses such a descriptor; a worker with many calls in flight has them."""
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        statement = for_psycopg(text("SELECT pg_backend_pid() AS pid"))
        pids = {direct.rows(statement, {})[0].pid for _ in range(5)}
        assert len(pids) == 1
    finally:
        for fd in held:
            os.close(fd)


def test_a_forked_child_opens_its_own_connection_and_leaves_the_parents_alone(
        db: Engine, direct: ThreadConnections) -> None:
    statement = for_psycopg(text("SELECT pg_backend_pid() AS pid"))
    parent = direct.rows(statement, {})[0].pid
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its own session, then closes everything
        code = 1
        try:
            os.write(write, str(direct.rows(statement, {})[0].pid).encode())
            direct.close()
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(child, 0)
    child_pid = int(os.read(read, 64).decode())
    os.close(read)

    assert os.waitstatus_to_exitcode(status) == 0
    assert child_pid != parent
    assert direct.rows(statement, {})[0].pid == parent  # the parent's session still works


def test_threads_past_the_limit_are_told_to_use_the_engine(db: Engine) -> None:
    conns = ThreadConnections(db, NAME, limit=1)
    job = _job(db, "batch_limit", 2)
    claim(db, job, [0], "w1", 60, time.time(), direct=conns)
    assert conns.ready()  # this thread holds the one connection
    seen: list[bool] = []
    other = threading.Thread(target=lambda: seen.append(conns.ready()))
    other.start()
    other.join()
    assert seen == [False]
    conns.close()


def test_a_constant_none_is_bound_as_null() -> None:
    t = table("t", column("a"), column("b"))
    statement = for_psycopg(update(t).values(a=None).where(t.c.b == bindparam("b")))
    assert statement.defaults == {"a": None}


def test_a_direct_status_read_is_the_engines(db: Engine, direct: ThreadConnections) -> None:
    job_id = _job(db, "batch_status", 4)
    rows = claim(db, job_id, [0, 1], "w1", 60, time.time())
    usage = Usage(prompt_tokens=7, completion_tokens=3)
    record(db, [
        Outcome(kind=OutcomeKind.SUCCEEDED, job_id=job_id, seq=0, claim=rows[0].claim,
                status_code=200, response="{}", usage=usage, cost=Decimal("0.000123456789")),
        Outcome(kind=OutcomeKind.DEFERRED, job_id=job_id, seq=1, claim=rows[1].claim,
                not_before=time.time() + 60, error_code=BUDGET_PAUSED,
                error_message="paused: the monthly budget is spent")])

    def seen(**kwargs: Any) -> dict[str, Any]:
        return get_job(db, job_id, **kwargs).model_dump(exclude={"eta_seconds"})

    via_engine = seen()
    assert seen(direct=direct) == via_engine
    assert via_engine["cost"] == Decimal("0.000123456789")  # Money's processor ran
    assert via_engine["paused"] == "paused: the monthly budget is spent"
    assert seen(tenant=DEFAULT_TENANT, direct=direct) == via_engine
    assert seen(dispatched=True, direct=direct) == via_engine
    with db.connect() as conn:
        assert conn.execute(select(JOBS.c.dispatched_at).where(JOBS.c.id == job_id)).scalar()
    for kwargs in ({}, {"tenant": "someone-else"}):
        with pytest.raises(NotFoundError):
            get_job(db, "batch_nope" if not kwargs else job_id, direct=direct, **kwargs)
