"""The shared circuit breaker's state machine (real Redis), and which errors count."""

from __future__ import annotations

from typing import Any

import pytest

from routing.health import Verdict, verdict_for
from routing.limits import Admission, Limiter, Refusal
from routing.strategies import Ordering
from schemas.errors import (
    AuthenticationError,
    BadRequestError,
    ConnectionFailedError,
    ContextLengthError,
    MalformedResponseError,
    OverloadedError,
    RateLimitedError,
    ServerError,
    UpstreamError,
    UpstreamTimeoutError,
)
from tests.unit.routing.conftest import T0, catalog, run

BREAKER = ("routing: {breaker: {consecutive_failures: 3, failure_rate: 0.5, min_calls: 4,"
           " window_s: 60, cooldown_s: 10}}")
CAT = catalog("  a: {provider: openai, base_url: x, model: a}", routing=BREAKER)
A = Ordering((CAT.deployments["a"],))


async def _call(lim: Limiter, verdict: Verdict, at: int, cool_s: float = 0.0) -> Any:
    """Admit one call at ``at`` ms after T0 and report ``verdict``; the admission's result."""
    got = await lim.admit(A, 1, now_ms=T0 + at)
    if isinstance(got, Admission):
        await lim.settle(got, verdict, tokens=1, cool_s=cool_s, now_ms=T0 + at)
    return got


async def _breaker(lim: Limiter, at: int) -> str:
    return (await lim.peek([CAT.deployments["a"]], now_ms=T0 + at))["a"].breaker


@pytest.mark.parametrize(("error", "verdict"), [
    (None, Verdict.OK),
    (ServerError("x"), Verdict.FAIL),
    (OverloadedError("x"), Verdict.FAIL),
    (UpstreamTimeoutError("x"), Verdict.FAIL),
    (ConnectionFailedError("x"), Verdict.FAIL),
    (MalformedResponseError("x"), Verdict.FAIL),
    (RateLimitedError("x"), Verdict.THROTTLED),
    (BadRequestError("x"), Verdict.NEUTRAL),
    (ContextLengthError("x"), Verdict.NEUTRAL),
    (AuthenticationError("x"), Verdict.NEUTRAL),
])
def test_only_deployment_health_errors_count_as_failures(error: UpstreamError | None,
                                                         verdict: Verdict) -> None:
    assert verdict_for(error) is verdict


def test_consecutive_failures_open_it_and_one_probe_closes_it(make_limiter: Any) -> None:
    lim: Limiter = make_limiter(CAT)

    async def scenario() -> list[Any]:
        seen = [await _call(lim, Verdict.FAIL, at=i) for i in range(3)]
        seen.append(await _breaker(lim, 3))
        seen.append(await lim.admit(A, 1, now_ms=T0 + 5_000))  # open: refused
        probe = await lim.admit(A, 1, now_ms=T0 + 10_003)  # cooldown over: the probe
        seen += [probe, await lim.admit(A, 1, now_ms=T0 + 10_004)]  # only one probe
        assert isinstance(probe, Admission)
        await lim.settle(probe, Verdict.OK, tokens=1, now_ms=T0 + 10_005)
        seen += [await _breaker(lim, 10_006), await lim.admit(A, 1, now_ms=T0 + 10_006)]
        return seen

    *calls, state, while_open, probe, second, after, normal = run(scenario(), lim)

    assert all(isinstance(c, Admission) for c in calls)
    assert state == "open"
    assert isinstance(while_open, Refusal) and not while_open.saturated
    assert while_open.reasons[0][1] == "open" and while_open.wait_s == pytest.approx(5.0, 0.01)
    assert isinstance(probe, Admission) and probe.probe
    assert isinstance(second, Refusal) and second.reasons[0][1] == "probing"
    assert after == "closed"
    assert isinstance(normal, Admission) and not normal.probe


def test_a_failed_probe_opens_it_again(make_limiter: Any) -> None:
    lim: Limiter = make_limiter(CAT)

    async def scenario() -> list[Any]:
        for i in range(3):
            await _call(lim, Verdict.FAIL, at=i)
        probe = await _call(lim, Verdict.FAIL, at=10_003)
        return [probe, await _breaker(lim, 10_004), await lim.admit(A, 1, now_ms=T0 + 19_000),
                await lim.admit(A, 1, now_ms=T0 + 20_004)]

    probe, state, still_open, next_probe = run(scenario(), lim)

    assert isinstance(probe, Admission) and probe.probe
    assert state == "open"
    assert isinstance(still_open, Refusal)
    assert isinstance(next_probe, Admission) and next_probe.probe


def test_a_failure_rate_over_the_window_opens_it(make_limiter: Any) -> None:
    lim: Limiter = make_limiter(CAT)

    async def scenario() -> list[str]:
        states = []
        for i, verdict in enumerate([Verdict.OK, Verdict.FAIL, Verdict.OK, Verdict.FAIL]):
            await _call(lim, verdict, at=i)
            states.append(await _breaker(lim, i))
        return states

    # never 3 failures in a row, but 2 of 4 calls (min_calls) failed: rate 0.5
    assert run(scenario(), lim) == ["closed", "closed", "closed", "open"]


def test_answers_that_are_not_health_failures_break_the_streak(make_limiter: Any) -> None:
    lim: Limiter = make_limiter(catalog("  a: {provider: openai, base_url: x, model: a}",
                                        routing=BREAKER.replace("min_calls: 4", "min_calls: 50")))

    async def scenario() -> str:
        for i, verdict in enumerate([Verdict.FAIL, Verdict.FAIL, Verdict.NEUTRAL,
                                     Verdict.FAIL, Verdict.FAIL, Verdict.OK, Verdict.FAIL]):
            await _call(lim, verdict, at=i)
        return await _breaker(lim, 10)

    assert run(scenario(), lim) == "closed"


def test_a_429_cools_the_deployment_down_without_counting_as_broken(make_limiter: Any) -> None:
    lim: Limiter = make_limiter(CAT)

    async def scenario() -> list[Any]:
        throttled = [await _call(lim, Verdict.THROTTLED, at=i * 3000, cool_s=2) for i in range(5)]
        cooling = await lim.admit(A, 1, now_ms=T0 + 12_500)
        return [throttled, cooling, await _breaker(lim, 12_500),
                await lim.admit(A, 1, now_ms=T0 + 14_001)]

    throttled, cooling, state, later = run(scenario(), lim)

    assert all(isinstance(t, Admission) for t in throttled)  # each came after the cooldown
    assert isinstance(cooling, Refusal) and cooling.reasons[0][1] == "cooling"
    assert cooling.wait_s == pytest.approx(1.5, abs=0.01)
    assert state == "closed"
    assert isinstance(later, Admission)


def test_a_void_call_frees_its_slot_and_judges_nothing(make_limiter: Any) -> None:
    lim: Limiter = make_limiter(CAT)

    async def scenario() -> list[Any]:
        for i in range(2):
            await _call(lim, Verdict.FAIL, at=i)
        await _call(lim, Verdict.VOID, at=2)  # a cancelled call: the streak stays at 2
        await _call(lim, Verdict.FAIL, at=3)
        opened = await _breaker(lim, 4)
        probe = await _call(lim, Verdict.VOID, at=10_004)  # the probe was cancelled
        return [opened, probe, await lim.admit(A, 1, now_ms=T0 + 10_005)]

    opened, probe, next_probe = run(scenario(), lim)

    assert opened == "open"
    assert isinstance(probe, Admission) and probe.probe
    assert isinstance(next_probe, Admission) and next_probe.probe  # its turn passed on


def test_reports_sent_together_end_as_if_sent_one_by_one(make_limiter: Any) -> None:
    # a worker groups the reports of one loop iteration into one script run: a and b get the
    # same reports, a's in one run, b's one at a time; their breakers must end the same
    cat = catalog("  a: {provider: openai, base_url: x, model: a, tpm: 100000}\n"
                  "  b: {provider: openai, base_url: x, model: a, tpm: 100000}",
                  routing=BREAKER)
    lim: Limiter = make_limiter(cat)
    reports = [(Verdict.OK, 120.0), (Verdict.FAIL, 0.0), (Verdict.THROTTLED, 0.0),
               (Verdict.FAIL, 0.0), (Verdict.NEUTRAL, 0.0), (Verdict.FAIL, 0.0),
               (Verdict.FAIL, 0.0), (Verdict.FAIL, 0.0), (Verdict.VOID, 0.0),
               (Verdict.OK, 80.0), (Verdict.FAIL, 0.0)]

    async def scenario() -> tuple[list[Any], list[Any], dict[str, Any]]:
        sent: dict[str, list[Any]] = {}
        for name in ("a", "b"):
            one = Ordering((cat.deployments[name],))
            admitted = [await lim.admit(one, 50, now_ms=T0) for _ in reports]
            assert all(isinstance(a, Admission) for a in admitted)
            futures = []
            for adm, (verdict, ms) in zip(admitted, reports, strict=True):
                future = lim.settle_soon(adm, verdict, tokens=40, latency_ms=ms, cool_s=2,
                                         now_ms=T0 + 5)
                if name == "b":
                    await future
                futures.append(future)
            sent[name] = [await f for f in futures]
        state = await lim.peek([cat.deployments["a"], cat.deployments["b"]], now_ms=T0 + 6)
        return sent["a"], sent["b"], state

    together, apart, state = run(scenario(), lim)

    # the 6th report opens it: 3 failures of 5 judged calls (min_calls 4, rate 0.5)
    assert together == apart == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    a, b = state["a"], state["b"]
    assert (a.open_until, a.cool_until, a.streak, a.opened, a.latency_ms) == (
        b.open_until, b.cool_until, b.streak, b.opened, b.latency_ms)
    assert a.breaker == "open" and a.opened == 1 and a.cool_until == T0 + 5 + 2000
    assert a.latency_ms is not None and 80 < a.latency_ms < 120
    assert (a.in_flight, a.tokens_in_window) == (b.in_flight, b.tokens_in_window) == (0, 440)
