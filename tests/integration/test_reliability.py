"""Reliability against one fault at a time: a killed worker, SIGTERM, upstream faults.

Every test ends with the same audit a user can make: every input line comes back exactly once,
as a result or an error, each success carries one cost, and the job's totals are the sum of
its requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from bench.chaos import audit_job
from schemas.jobs import JobStatus, RequestState
from schemas.keys import EPOCH_KEY
from tests.helpers import wait_for
from tests.stack import CATALOG, Stack, make_stack

NO_BREAKER = """\
routing:
  breaker: {{consecutive_failures: 1000, min_calls: 1000}}
"""


@pytest.fixture
def stack(tmp_path: Path, database_url: str, redis_url: str, mock: object) -> Iterator[Stack]:
    """The usual stack, but the breaker never pauses the deployment these tests fail on
    purpose: a pause only delays them (the routing tests cover the breaker)."""
    s = make_stack(tmp_path, database_url, redis_url, mock.url,  # type: ignore[attr-defined]
                   catalog=CATALOG + NO_BREAKER)
    yield s
    s.close()


SHORT_LEASE: dict[str, Any] = {"BATCHYARD_WORKER__LEASE_S": "3",
                               "BATCHYARD_WORKER__VISIBILITY_TIMEOUT_S": "3"}


def _mock(stack: Stack, **config: object) -> None:
    httpx.post(f"{stack.mock_url}/_mock/config", json=config).raise_for_status()


def _reconciling(stack: Stack) -> None:
    """Wait for the reconciler's first pass (it marks the broker's epoch): from then on only
    the rules under test re-publish anything."""
    client = redis.Redis.from_url(stack.settings.redis_url)
    wait_for(lambda: client.exists(EPOCH_KEY), 30, "the reconciler's first pass")
    client.close()


def _in_flight(stack: Stack) -> int:
    return int(httpx.get(f"{stack.mock_url}/_mock/stats").json()["in_flight"])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_worker_killed_mid_call_loses_nothing_and_charges_once(stack: Stack) -> None:
    _mock(stack, latency_ms=1500)
    victim = stack.start_worker("--max-in-flight", "16", **SHORT_LEASE)
    _reconciling(stack)
    job = stack.producer.submit([f"question {i}" for i in range(300)], model="small")
    wait_for(lambda: _in_flight(stack) >= 8, 30, "calls in flight on the first worker")

    victim.kill()  # SIGKILL: calls in flight, more chunks taken but not started
    _mock(stack, latency_ms=20)
    stack.start_worker(**SHORT_LEASE)
    final = stack.producer.wait(job.id, timeout=90)

    assert final.status is JobStatus.COMPLETED
    audit = audit_job(stack.producer.engine, job.id, [f"request-{i}" for i in range(1, 301)])
    assert audit.problems() == []
    assert audit.succeeded == 300 == audit.cost_records


FAULTS = {  # custom_id: (directive, the error code it must end with)
    "server": ("[[mock:status=500]]", "server_error"),
    "limited": ("[[mock:status=429]]", "rate_limited"),
    "limited-no-header": ("[[mock:status=429,retry_after=none]]", "rate_limited"),
    "overloaded": ("[[mock:overloaded]]", "overloaded"),
    "timeout": ("[[mock:timeout]]", "timeout"),
    "reset": ("[[mock:reset]]", "connection_error"),
    "malformed": ("[[mock:malformed]]", "malformed_response"),
    "error-body": ("[[mock:error_body]]", "server_error"),
}


def _line(custom_id: str, text: str, model: str = "small") -> dict[str, object]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}]}}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_each_upstream_fault_ends_with_its_error_class_after_the_attempt_limit(
        stack: Stack) -> None:
    _mock(stack, hang_seconds=3)
    stack.start_worker(BATCHYARD_WORKER__MAX_ATTEMPTS="3", BATCHYARD_UPSTREAM__TIMEOUT_S="0.5")
    rows = [_line(cid, f"{directive} question") for cid, (directive, _) in FAULTS.items()]
    job = stack.producer.submit([*rows, _line("ok", "a plain question")])

    final = stack.producer.wait(job.id, timeout=120)

    assert final.status is JobStatus.COMPLETED
    lines = {line.custom_id: line for line in stack.producer.results(job.id)}
    assert lines["ok"].error is None
    codes = {cid: line.error.code for cid, line in lines.items() if line.error}
    assert codes == {cid: code for cid, (_, code) in FAULTS.items()}
    for cid in FAULTS:
        error = lines[cid].error
        assert error is not None and "gave up after 3 attempts" in error.message
    stats = httpx.get(f"{stack.mock_url}/_mock/stats").json()
    assert stats["total"] == 3 * len(FAULTS) + 1  # every fault retried, up to the limit
    audit = audit_job(stack.producer.engine, job.id, [*FAULTS, "ok"])
    assert audit.problems() == [] and audit.cost_records == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_retry_after_header_is_waited_for(stack: Stack) -> None:
    stack.start_worker(BATCHYARD_WORKER__MAX_ATTEMPTS="2")
    job = stack.producer.submit([_line("slow-down", "[[mock:status=429,retry_after=2]]", "large")])

    final = stack.producer.wait(job.id, timeout=60)

    assert final.counts[RequestState.FAILED] == 1
    arrivals = httpx.get(f"{stack.mock_url}/_mock/stats?arrivals=1").json()["arrivals"]["up-b"]
    assert len(arrivals) == 2 and arrivals[1] - arrivals[0] >= 2.0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_transient_faults_of_every_kind_end_in_success(stack: Stack) -> None:
    _mock(stack, seed=5, hang_seconds=3, timeout_rate=0.03, reset_rate=0.05, error_rate=0.1,
          overload_rate=0.05, malformed_rate=0.05, error_body_rate=0.05, throttle_rate=0.05)
    stack.start_worker(BATCHYARD_WORKER__MAX_ATTEMPTS="20", BATCHYARD_UPSTREAM__TIMEOUT_S="0.5")
    job = stack.producer.submit([f"question {i}" for i in range(300)], model="small")

    final = stack.producer.wait(job.id, timeout=120)

    assert final.status is JobStatus.COMPLETED
    audit = audit_job(stack.producer.engine, job.id, [f"request-{i}" for i in range(1, 301)])
    assert audit.problems() == []
    assert audit.succeeded == 300 == audit.cost_records
    by_status = httpx.get(f"{stack.mock_url}/_mock/stats").json()["by_status"]
    assert {"500", "503", "429", "reset"} <= set(by_status)  # the faults did happen


def _upstream_total(stack: Stack) -> int:
    return int(httpx.get(f"{stack.mock_url}/_mock/stats").json()["total"])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sigterm_finishes_calls_in_flight_and_hands_back_the_chunks_it_had_not_started(
        stack: Stack) -> None:
    _mock(stack, latency_ms=2000)
    # no redelivery by the visibility timeout: what comes back, the SIGTERM handed back
    long_waits: dict[str, Any] = {"BATCHYARD_WORKER__VISIBILITY_TIMEOUT_S": "3600"}
    first = stack.start_worker("--max-in-flight", "16", **long_waits)
    job = stack.producer.submit([f"question {i}" for i in range(300)], model="small")
    wait_for(lambda: _in_flight(stack) >= 8, 30, "calls in flight on the first worker")
    calls = _upstream_total(stack)  # no call ends (2 s) or starts before the SIGTERM

    assert first.stop() == 0  # SIGTERM, then wait for the process to end
    after_stop = stack.producer.status(job.id)
    calls_after_stop = _upstream_total(stack)
    _mock(stack, latency_ms=20)
    stack.start_worker(**long_waits)
    final = stack.producer.wait(job.id, timeout=60)

    assert calls_after_stop == calls  # no call started after the SIGTERM
    assert after_stop.counts[RequestState.SUCCEEDED] == calls  # the calls in flight finished
    assert after_stop.counts.get(RequestState.RUNNING, 0) == 0
    assert final.status is JobStatus.COMPLETED
    audit = audit_job(stack.producer.engine, job.id, [f"request-{i}" for i in range(1, 301)])
    assert audit.problems() == [] and audit.succeeded == 300
    assert _upstream_total(stack) == 300  # nothing was called twice


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_calls_still_running_after_the_grace_period_are_handed_back(stack: Stack) -> None:
    _mock(stack, latency_ms=10_000)
    first = stack.start_worker(BATCHYARD_WORKER__SHUTDOWN_GRACE_S="1")
    job = stack.producer.submit([f"question {i}" for i in range(20)], model="small")
    wait_for(lambda: _in_flight(stack) >= 20, 30, "calls in flight")

    assert first.stop(timeout=20) == 0
    after_stop = stack.producer.status(job.id)
    _mock(stack, latency_ms=20)
    stack.start_worker()
    final = stack.producer.wait(job.id, timeout=60)

    assert after_stop.counts.get(RequestState.RUNNING, 0) == 0  # not left to a lease
    assert after_stop.counts[RequestState.DEFERRED] == 20
    assert final.status is JobStatus.COMPLETED
    audit = audit_job(stack.producer.engine, job.id, [f"request-{i}" for i in range(1, 21)])
    assert audit.problems() == [] and audit.succeeded == 20
