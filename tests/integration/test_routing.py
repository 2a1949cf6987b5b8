"""Routing across real worker processes: shares, breakers, limits, fallbacks, required tags.

Three ``batchyard worker`` processes share one Redis (limits, health) and one database; the
upstreams are mock servers that count what reaches them (``/_mock/stats``). Each deployment
has its own upstream model name, so ``by_model`` tells which deployment a call went to.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from mock_upstream.config import MockConfig
from mock_upstream.server import RunningMock, start_in_thread
from schemas.jobs import JobOptions, JobStatus, RequestState, RoutingOptions
from schemas.keys import Tier
from schemas.outcomes import Outcome, OutcomeKind
from storage import NewJob, claim, create_job, make_engine, record
from storage.models import RequestRow
from tests.helpers import wait_for
from tests.stack import Stack, make_stack

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
"""The worker tests run on SQLite only (slow); the storage test below runs on both."""

WORKERS = 3
DEPLOYMENT = """\
  {name}:
    provider: openai
    base_url: {base}/v1
    model: up-{name}
    api_key_env: BATCHYARD_TEST_KEY
{extra}"""


def _catalog(deployments: dict[str, tuple[str, str]], models: str, routing: str = "") -> str:
    """Block-style YAML (``make_stack`` formats ``{url}``, so no flow braces here)."""
    deps = "".join(DEPLOYMENT.replace("{name}", name).replace("{base}", base)
                   .replace("{extra}", extra) for name, (base, extra) in deployments.items())
    return f"deployments:\n{deps}models:\n{models}{routing}"


@pytest.fixture
def second_mock() -> Iterator[RunningMock]:
    running = start_in_thread(MockConfig())
    yield running
    running.stop()


def _stack(tmp_path: Path, database_url: str, redis_url: str, mock: Any, catalog: str) -> Stack:
    return make_stack(tmp_path, database_url, redis_url, mock.url, catalog=catalog)


def _start(stack: Stack, n: int = WORKERS, *args: str, **env: str) -> None:
    workers = [stack.start_worker(*args, ready=False, **env) for _ in range(n)]
    for worker in workers:
        worker.wait_ready()


def _stats(url: str, **params: Any) -> dict[str, Any]:
    return httpx.get(f"{url}/_mock/stats", params=params).json()  # type: ignore[no-any-return]


def _routes(stack: Stack, job_id: str) -> list[dict[str, Any]]:
    with stack.producer.engine.connect() as conn:
        rows = conn.execute(select(RequestRow.route).where(RequestRow.job_id == job_id))
        return [json.loads(r) for (r,) in rows if r]


@pytest.fixture
def closing() -> Iterator[list[Stack]]:
    stacks: list[Stack] = []
    yield stacks
    for s in stacks:
        s.close()


@SQLITE
def test_weights_1_2_7_share_the_traffic_in_proportion(
        tmp_path: Path, database_url: str, redis_url: str, mock: Any,
        closing: list[Stack]) -> None:
    deps = {name: ("{url}", f"    weight: {w}\n") for name, w in (("a", 1), ("b", 2), ("c", 7))}
    stack = _stack(tmp_path, database_url, redis_url, mock,
                   _catalog(deps, "  m:\n    deployments: [a, b, c]\n"))
    closing.append(stack)
    _start(stack)

    job = stack.producer.submit([f"q {i}" for i in range(1000)], model="m", tier="bulk")
    final = stack.producer.wait(job.id, timeout=180)

    assert final.counts[RequestState.SUCCEEDED] == 1000
    by_model = _stats(mock.url)["by_model"]
    shares = {name: by_model.get(f"up-{name}", 0) / 1000 for name in "abc"}
    # tolerance ±0.05 absolute: over 3.4 standard deviations of a 1000-draw binomial
    assert shares == pytest.approx({"a": 0.1, "b": 0.2, "c": 0.7}, abs=0.05)


@SQLITE
def test_a_failing_deployment_is_cut_off_and_the_job_loses_nothing(
        tmp_path: Path, database_url: str, redis_url: str, mock: Any, second_mock: RunningMock,
        closing: list[Stack]) -> None:
    httpx.post(f"{second_mock.url}/_mock/config", json={"error_rate": 1.0})
    for m in (mock, second_mock):
        httpx.post(f"{m.url}/_mock/config", json={"latency_ms": 20})
    deps = {"bad": (second_mock.url, ""), "good1": ("{url}", ""), "good2": ("{url}", "")}
    routing = ("routing:\n  breaker:\n    consecutive_failures: 5\n    cooldown_s: 30\n")
    stack = _stack(tmp_path, database_url, redis_url, mock,
                   _catalog(deps, "  m:\n    deployments: [bad, good1, good2]\n", routing))
    closing.append(stack)
    _start(stack, WORKERS, "--max-in-flight", "16")

    job = stack.producer.submit([f"q {i}" for i in range(600)], model="m", tier="bulk")
    final = stack.producer.wait(job.id, timeout=180)

    assert final.status is JobStatus.COMPLETED
    assert final.counts[RequestState.SUCCEEDED] == 600 and final.counts[RequestState.FAILED] == 0
    bad_calls = _stats(second_mock.url)["total"]
    # it took 5 failures in a row to open; until then at most 3 × 16 calls were in flight.
    # Without the breaker, a third of 600 requests would have tried it first.
    assert 5 <= bad_calls <= 5 + WORKERS * 16
    good = _stats(mock.url)["by_model"]
    assert good.get("up-good1", 0) + good.get("up-good2", 0) == 600
    moved = [r for r in _routes(stack, job.id)
             if [c["deployment"] for c in r["calls"]][:1] == ["bad"]]
    assert moved and all(r["calls"][-1]["status"] == 200 for r in moved)


@SQLITE
def test_an_rpm_limit_holds_over_every_window_across_three_workers(
        tmp_path: Path, database_url: str, redis_url: str, mock: Any,
        closing: list[Stack]) -> None:
    # N = 10 requests per 5 s window (limit_window_s keeps the test short; the default is 60)
    deps = {"slow": ("{url}", "    rpm: 10\n    limit_window_s: 5\n")}
    stack = _stack(tmp_path, database_url, redis_url, mock,
                   _catalog(deps, "  m:\n    deployments: [slow]\n"))
    closing.append(stack)
    _start(stack)

    job = stack.producer.submit([f"q {i}" for i in range(30)], model="m", tier="high")
    final = stack.producer.wait(job.id, timeout=120)

    assert final.counts[RequestState.SUCCEEDED] == 30
    stats = _stats(mock.url, window=5, arrivals=1)
    assert stats["max_in_window"]["up-slow"] <= 10
    assert "429" not in stats["by_status"]
    arrivals = stats["arrivals"]["up-slow"]
    assert arrivals[-1] - arrivals[0] >= 10  # 30 requests at 10 per 5 s need two more windows
    assert all(line.error is None for line in stack.producer.results(job.id))
    with stack.producer.engine.connect() as conn:  # waiting for capacity used no attempt
        most = conn.execute(select(func.max(RequestRow.attempts))
                            .where(RequestRow.job_id == job.id)).scalar()
    assert most == 1
    assert any(r["waits"] > 0 for r in _routes(stack, job.id))


@SQLITE
def test_a_prompt_longer_than_the_context_window_lands_on_the_fallback(
        tmp_path: Path, database_url: str, redis_url: str, mock: Any,
        closing: list[Stack]) -> None:
    deps = {"short": ("{url}", "    context_window: 500\n"),
            "long": ("{url}", "    context_window: 100000\n")}
    models = ("  small:\n    deployments: [short]\n    fallbacks: [large]\n"
              "  large:\n    deployments: [long]\n")
    stack = _stack(tmp_path, database_url, redis_url, mock, _catalog(deps, models))
    closing.append(stack)
    _start(stack, 1)

    prompts = ["a short question"] * 5 + ["summarise: " + "lorem ipsum " * 400]  # ~1200 tokens
    job = stack.producer.submit(prompts, model="small")
    final = stack.producer.wait(job.id, timeout=120)

    assert final.counts[RequestState.SUCCEEDED] == 6
    assert _stats(mock.url)["by_model"] == {"up-short": 5, "up-long": 1}
    long_route = next(r for r in _routes(stack, job.id) if r["path"] == ["large"])
    assert "more than its context window (500)" in long_route["skipped"]["small"]


def _eu_stack(tmp_path: Path, database_url: str, redis_url: str, mock: Any,
              eu_mock: RunningMock, policy: str) -> Stack:
    deps = {"eu": (eu_mock.url, "    tags:\n      region: eu\n"),
            "us": ("{url}", "    weight: 9\n    tags:\n      region: us\n")}
    routing = (f"routing:\n  when_unavailable: {policy}\n  breaker:\n"
               "    consecutive_failures: 3\n    cooldown_s: 1\n")
    return _stack(tmp_path, database_url, redis_url, mock,
                  _catalog(deps, "  m:\n    deployments: [eu, us]\n", routing))


@SQLITE
def test_an_eu_only_job_waits_for_its_cooling_deployment_and_never_leaves_eu(
        tmp_path: Path, database_url: str, redis_url: str, mock: Any, second_mock: RunningMock,
        closing: list[Stack]) -> None:
    httpx.post(f"{second_mock.url}/_mock/config", json={"error_rate": 1.0})
    stack = _eu_stack(tmp_path, database_url, redis_url, mock, second_mock, "wait")
    closing.append(stack)
    _start(stack, WORKERS, BATCHYARD_WORKER__MAX_ATTEMPTS="20")

    job = stack.producer.submit([f"q {i}" for i in range(40)], model="m",
                                routing={"require_tags": {"region": "eu"}})
    wait_for(lambda: any(r.get("waits") for r in _routes(stack, job.id)), 60,
             "requests waiting for the eu deployment's breaker")
    httpx.post(f"{second_mock.url}/_mock/config", json={"error_rate": 0.0})  # eu recovers
    final = stack.producer.wait(job.id, timeout=120)

    assert final.counts[RequestState.SUCCEEDED] == 40
    assert _stats(mock.url)["total"] == 0  # the us deployment never saw a call
    assert {c["deployment"] for r in _routes(stack, job.id) for c in r["calls"]} == {"eu"}


@SQLITE
def test_an_eu_only_job_fails_clearly_when_the_policy_says_not_to_wait(
        tmp_path: Path, database_url: str, redis_url: str, mock: Any, second_mock: RunningMock,
        closing: list[Stack]) -> None:
    httpx.post(f"{second_mock.url}/_mock/config", json={"error_rate": 1.0})
    stack = _eu_stack(tmp_path, database_url, redis_url, mock, second_mock, "fail")
    closing.append(stack)
    _start(stack, 1, BATCHYARD_WORKER__MAX_ATTEMPTS="20")

    job = stack.producer.submit([f"q {i}" for i in range(20)], model="m",
                                routing={"require_tags": {"region": "eu"}})
    final = stack.producer.wait(job.id, timeout=120)

    assert final.counts[RequestState.FAILED] == 20
    assert _stats(mock.url)["total"] == 0
    errors = [line.error for line in stack.producer.results(job.id) if line.error]
    unavailable = [e for e in errors if e.code == "no_healthy_deployment"]
    assert unavailable, [e.code for e in errors]
    assert "'m' with region=eu" in unavailable[0].message
    assert "eu: breaker open" in unavailable[0].message


def test_a_route_is_kept_across_attempts_and_waiting_gives_the_attempt_back(
        database_url: str) -> None:
    engine = make_engine(database_url)
    body = '{"model":"m","messages":[{"role":"user","content":"x"}]}'
    routing = RoutingOptions(strategy="ordered", require_tags={"region": "eu"})
    create_job(engine, NewJob("batch_route", Tier.BULK, JobOptions(routing=routing)),
               [("c0", "m", body)], batch=10, check=lambda conn: None)
    now = time.time()

    [first] = claim(engine, "batch_route", [0], "w1", lease_s=60, now=now)
    record(engine, [Outcome(kind=OutcomeKind.DEFERRED, job_id="batch_route", seq=0, claim="w1",
                            not_before=now, throttled=True, route='{"calls":[],"waits":1}')])
    [second] = claim(engine, "batch_route", [0], "w2", lease_s=60, now=now + 1)
    record(engine, [Outcome(kind=OutcomeKind.DEFERRED, job_id="batch_route", seq=0, claim="w2",
                            not_before=now, route='{"calls":[{"deployment":"a"}],"waits":1}')])
    [third] = claim(engine, "batch_route", [0], "w3", lease_s=60, now=now + 2)
    record(engine, [Outcome(kind=OutcomeKind.SUCCEEDED, job_id="batch_route", seq=0,
                            claim="w3", route='{"calls":[{"deployment":"b"}],"waits":1}')])

    assert first.routing == routing and first.route is None
    assert (second.attempts, second.route) == (1, '{"calls":[],"waits":1}')  # given back
    assert third.attempts == 2 and third.route is not None and '"a"' in third.route
    with engine.connect() as conn:
        stored = conn.execute(select(RequestRow.route)).scalar()
    assert stored == '{"calls":[{"deployment":"b"}],"waits":1}'
    engine.dispose()
