"""The database unreachable for a while: workers keep their outcomes and retry, submissions fail
with a clear error and store nothing, and everything finishes once it is back. Meanwhile
``status``, ``results``, ``cancel`` and ``report`` fail with one line naming the database
(never its password), and ``wait`` rides the outage out.

PostgreSQL is reached through a TCP proxy the test cuts and restores (the server itself keeps
running for the other tests).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select, text

from bench.chaos import audit_job
from schemas.errors import DatabaseUnavailableError
from schemas.jobs import JobStatus
from storage import cancel_job, make_engine
from storage.models import JOBS, REQUESTS
from tests.chaos.proxy import TcpProxy
from tests.helpers import ROOT, wait_for
from tests.stack import Stack, make_stack


@pytest.fixture
def proxied(tmp_path: Path, database_url: str, redis_url: str, mock: object
            ) -> Iterator[tuple[Stack, TcpProxy]]:
    proxy, url = TcpProxy.for_url(database_url)
    stack = make_stack(tmp_path, url, redis_url, mock.url)  # type: ignore[attr-defined]
    yield stack, proxy
    proxy.restore()
    stack.close()
    proxy.close()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_database_outage_delays_work_and_loses_none(proxied: tuple[Stack, TcpProxy]) -> None:
    stack, proxy = proxied
    httpx.post(f"{stack.mock_url}/_mock/config", json={"latency_ms": 200}).raise_for_status()
    stack.start_worker("--max-in-flight", "64")
    job = stack.producer.submit([f"question {i}" for i in range(600)], model="small")
    wait_for(lambda: stack.producer.status(job.id).finished >= 100, 60, "some progress")

    proxy.cut()
    with pytest.raises(DatabaseUnavailableError) as refused:
        stack.producer.submit([f"during {i}" for i in range(50)], model="small")
    log = stack.workers[0].log_path
    wait_for(lambda: log.read_text().count("outcomes failed") >= 3, 30,
             "the worker to retry writing its outcomes a few times")
    proxy.restore()
    final = stack.producer.wait(job.id, timeout=120)

    assert str(refused.value).startswith("the database did not answer at ")
    assert "was not stored" in str(refused.value)
    assert final.status is JobStatus.COMPLETED
    audit = audit_job(stack.producer.engine, job.id, [f"request-{i}" for i in range(1, 601)])
    assert audit.problems() == [] and audit.succeeded == 600
    with stack.producer.engine.connect() as conn:  # the refused submission left nothing
        assert conn.execute(select(func.count()).select_from(JOBS)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(REQUESTS)).scalar() == 600


# --- what the producer and the CLI tell a user while the database is unreachable -----------


@pytest.fixture
def cut_off(tmp_path: Path, database_url: str, redis_url: str, mock: object
            ) -> Iterator[tuple[Stack, TcpProxy, str]]:
    """A stack whose database (with a password in its URL, which must never be shown) is
    reached through a proxy; one queued job (no worker runs it); the direct URL."""
    proxy, url = TcpProxy.for_url(database_url)
    url = url.replace("postgres@", "postgres:s3cret@", 1)  # the server trusts 127.0.0.1
    stack = make_stack(tmp_path, url, redis_url, mock.url)  # type: ignore[attr-defined]
    stack.job = stack.producer.submit(["one", "two", "three"], model="small")  # type: ignore[attr-defined]
    yield stack, proxy, database_url
    proxy.restore()
    stack.close()
    proxy.close()


def _where(proxy: TcpProxy) -> str:
    return f"the database did not answer at postgresql+psycopg://postgres:***@127.0.0.1:{proxy.port}/"


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_status_results_and_cancel_name_the_unreachable_database(
        cut_off: tuple[Stack, TcpProxy, str]) -> None:
    stack, proxy, _ = cut_off
    producer, job = stack.producer, stack.job  # type: ignore[attr-defined]

    proxy.cut()
    errors = {}
    for name, call in {"status": lambda: producer.status(job.id),
                       "results": lambda: list(producer.results(job.id)),
                       "cancel": lambda: producer.cancel(job.id)}.items():
        with pytest.raises(DatabaseUnavailableError) as caught:
            call()
        errors[name] = str(caught.value)
    proxy.restore()

    for message in errors.values():
        assert message.startswith(_where(proxy)), message
        assert "s3cret" not in message and "\n" not in message
    assert errors["status"].endswith("the job's status could not be read")
    assert errors["results"].endswith("the results stopped after 0 lines; read them again "
                                      "once it answers")
    assert errors["cancel"].endswith("the job may not be cancelled: cancel it again once it "
                                     "answers")
    assert producer.status(job.id).status is JobStatus.IN_PROGRESS  # back: nothing changed


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_wait_rides_out_an_outage_and_says_so_once(cut_off: tuple[Stack, TcpProxy, str]) -> None:
    stack, proxy, direct = cut_off
    producer, job = stack.producer, stack.job  # type: ignore[attr-defined]
    told: list[str] = []

    proxy.cut()
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(producer.wait, job.id, timeout=60, notify=told.append)
        wait_for(lambda: told, 10, "wait to say the database is unreachable")
        wait_for(lambda: len(told) == 1 and not waiting.done(), 2, "a few more failed polls",
                 interval=1.0)  # the outage goes on: wait keeps polling, says nothing more
        engine = make_engine(direct)  # meanwhile the job ends (cancelled by someone else)
        cancel_job(engine, job.id)
        engine.dispose()
        proxy.restore()
        final = waiting.result(30)

    assert final.status is JobStatus.CANCELLED
    assert told[0].startswith(_where(proxy)) and "still waiting" in told[0]
    assert told[1:] == ["the database answers again"]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_wait_gives_up_at_its_timeout_when_the_outage_lasts(
        cut_off: tuple[Stack, TcpProxy, str]) -> None:
    stack, proxy, _ = cut_off
    proxy.cut()

    with pytest.raises(DatabaseUnavailableError, match="gave up waiting after"):
        stack.producer.wait(stack.job.id, timeout=1.5, notify=lambda _: None)  # type: ignore[attr-defined]


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchyard", *args], env=stack.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_cli_commands_fail_with_one_line_naming_the_database(
        cut_off: tuple[Stack, TcpProxy, str]) -> None:
    stack, proxy, _ = cut_off
    job_id = stack.job.id  # type: ignore[attr-defined]
    proxy.cut()

    runs = {argv[0]: _cli(stack, *argv) for argv in (
        ["status", job_id], ["wait", job_id, "--quiet"], ["results", job_id], ["cancel", job_id],
        ["report"])}

    for command, run in runs.items():
        assert run.returncode == 2, (command, run.stderr)
        assert run.stderr.startswith("error: " + _where(proxy)), (command, run.stderr)
        assert run.stderr.count("\n") == 1 and "s3cret" not in run.stderr, (command, run.stderr)
        assert run.stdout == "", command


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_cli_wait_rides_out_an_outage(cut_off: tuple[Stack, TcpProxy, str],
                                      tmp_path: Path) -> None:
    stack, proxy, direct = cut_off
    job_id = stack.job.id  # type: ignore[attr-defined]
    tag = f"waiter-{job_id}"
    env = {**stack.env, "DATABASE_URL": stack.env["DATABASE_URL"] + f"?application_name={tag}"}
    err_path = tmp_path / "wait.err"
    engine = make_engine(direct)
    with err_path.open("w") as err:
        waiter = subprocess.Popen(
            [sys.executable, "-m", "batchyard", "wait", job_id, "--quiet", "--json",
             "--timeout", "60"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=err,
            text=True)
        try:
            wait_for(lambda: _polls_jobs(engine, tag), 30, "`wait` to be polling the job")
            proxy.cut()
            wait_for(lambda: "did not answer" in err_path.read_text(), 15, "the warning")
            cancel_job(engine, job_id)
            proxy.restore()
            out, _ = waiter.communicate(timeout=60)
        finally:
            if waiter.poll() is None:
                waiter.kill()
            engine.dispose()

    told = err_path.read_text()
    assert waiter.returncode == 0, told
    assert json.loads(out)["status"] == "cancelled"
    assert told.startswith("warning: " + _where(proxy))
    assert told.count("did not answer") == 1 and "Traceback" not in told


def _polls_jobs(engine: Engine, tag: str) -> bool:
    """The `wait` process (named by its application_name) has read the jobs table."""
    with engine.connect() as conn:
        queries = conn.execute(text("SELECT query FROM pg_stat_activity WHERE "
                                    "application_name = :tag"), {"tag": tag}).scalars().all()
    return any("jobs" in (q or "") for q in queries)


def test_cli_on_an_unreadable_sqlite_file_fails_with_one_line(
        tmp_path: Path, sqlite_url: str, redis_url: str, mock: object) -> None:
    stack = make_stack(tmp_path, sqlite_url, redis_url, mock.url)  # type: ignore[attr-defined]
    job_id = stack.producer.submit(["hi"], model="small").id
    stack.close()
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    path.rename(path.with_suffix(".moved"))
    path.mkdir()  # the database path is there, but no SQLite file can be opened at it

    runs = [_cli(stack, "status", job_id), _cli(stack, "report")]

    for run in runs:
        assert run.returncode == 2, run.stderr
        assert run.stderr.startswith(f"error: the database did not answer at {sqlite_url} "
                                     "(unable to open database file)"), run.stderr
        assert run.stderr.count("\n") == 1
