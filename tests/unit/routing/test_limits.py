"""The shared limiter's Lua scripts against a real Redis: windows, tokens, leases, waiting."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from routing.health import Verdict
from routing.limits import Admission, Limiter, Refusal
from routing.strategies import Ordering
from schemas.errors import RoutingStateError
from tests.unit.routing.conftest import T0, catalog, run


def _one(cat: Any, name: str = "a") -> Ordering:
    return Ordering((cat.deployments[name],))


def test_rpm_counts_a_call_until_a_window_after_its_answer(make_limiter: Any) -> None:
    cat = catalog("  a: {provider: openai, base_url: x, model: a, rpm: 3, limit_window_s: 10}")
    lim: Limiter = make_limiter(cat)

    async def scenario() -> list[Any]:
        got = [await lim.admit(_one(cat), 1, now_ms=T0 + i) for i in range(4)]
        for adm in got[:3]:
            assert isinstance(adm, Admission)
            await lim.settle(adm, Verdict.OK, tokens=1, now_ms=T0 + 500)  # answered at +0.5s
        still_full = await lim.admit(_one(cat), 1, now_ms=T0 + 10_100)  # 10s after the start
        free = await lim.admit(_one(cat), 1, now_ms=T0 + 10_501)  # 10s after the answers
        return [got[3], still_full, free]

    fourth, still_full, free = run(scenario(), lim)

    assert isinstance(fourth, Refusal) and fourth.saturated
    assert fourth.reasons[0][:2] == ("a", "rpm")
    assert isinstance(still_full, Refusal) and still_full.saturated
    assert isinstance(free, Admission)


def test_tpm_holds_the_estimate_then_the_reported_usage(make_limiter: Any) -> None:
    cat = catalog("  a: {provider: openai, base_url: x, model: a, tpm: 1000}")
    lim: Limiter = make_limiter(cat)

    async def scenario() -> tuple[Any, Any, Any]:
        first = await lim.admit(_one(cat), 600, now_ms=T0)
        second = await lim.admit(_one(cat), 600, now_ms=T0 + 1)
        assert isinstance(first, Admission)
        await lim.settle(first, Verdict.OK, tokens=100, now_ms=T0 + 2)  # it used only 100
        third = await lim.admit(_one(cat), 600, now_ms=T0 + 3)
        return first, second, third

    _first, second, third = run(scenario(), lim)

    assert isinstance(second, Refusal) and second.reasons[0][1] == "tpm"
    assert isinstance(third, Admission)


def test_a_crashed_workers_concurrency_slot_frees_when_its_lease_ends(make_limiter: Any) -> None:
    cat = catalog("  a: {provider: openai, base_url: x, model: a, max_concurrency: 1,"
                  " timeout_s: 1}")
    lim: Limiter = make_limiter(cat)
    lease = lim.lease_ms(cat.deployments["a"])  # the 1 s timeout plus the margin

    async def scenario() -> list[Any]:
        # the first call is never settled: its worker died
        return [await lim.admit(_one(cat), 1, now_ms=T0),
                await lim.admit(_one(cat), 1, now_ms=T0 + lease - 1),
                await lim.admit(_one(cat), 1, now_ms=T0 + lease + 1)]

    first, during, after = run(scenario(), lim)

    assert isinstance(first, Admission)
    assert isinstance(during, Refusal) and during.reasons[0][1] == "concurrency"
    assert isinstance(after, Admission)


def test_waiting_requests_get_start_times_spaced_by_the_limits_rate(make_limiter: Any) -> None:
    cat = catalog("  a: {provider: openai, base_url: x, model: a, rpm: 2, limit_window_s: 10}")
    lim: Limiter = make_limiter(cat)

    async def scenario() -> list[Any]:
        for _ in range(2):
            adm = await lim.admit(_one(cat), 1, now_ms=T0)
            assert isinstance(adm, Admission)
            await lim.settle(adm, Verdict.OK, tokens=1, now_ms=T0)
        return [await lim.admit(_one(cat), 1, now_ms=T0) for _ in range(3)]

    waits = [r.wait_s for r in run(scenario(), lim)]

    # the window frees at +10 s; then one request per 10 s / 2 = 5 s
    assert waits == pytest.approx([10.0, 15.0, 20.0], abs=0.01)


def test_admissions_queued_together_are_decided_one_after_another(make_limiter: Any) -> None:
    # the same waits as above, from five admissions a worker queued in one loop iteration
    # (they share one script run)
    cat = catalog("  a: {provider: openai, base_url: x, model: a, rpm: 2, limit_window_s: 10}")
    lim: Limiter = make_limiter(cat)

    async def scenario() -> list[Any]:
        return list(await asyncio.gather(*(lim.admit(_one(cat), 1, now_ms=T0)
                                           for _ in range(5))))

    first, second, *waiting = run(scenario(), lim)

    assert isinstance(first, Admission) and isinstance(second, Admission)
    assert first.member != second.member
    assert all(isinstance(r, Refusal) and r.saturated for r in waiting)
    # the window frees 10 s after the answers (expected one default latency, 1 s, from now)
    assert [r.wait_s for r in waiting] == pytest.approx([11.0, 16.0, 21.0], abs=0.01)


def test_a_report_queued_with_an_admission_frees_its_room_first(make_limiter: Any) -> None:
    cat = catalog("  a: {provider: openai, base_url: x, model: a, max_concurrency: 1}")
    lim: Limiter = make_limiter(cat)

    async def scenario() -> Any:
        held = await lim.admit(_one(cat), 1, now_ms=T0)
        assert isinstance(held, Admission)
        # the next request's admission and the first call's report are queued in the same
        # loop iteration, the admission first: the report still runs first, freeing the slot

        async def report() -> Any:
            return await lim.settle_soon(held, Verdict.OK, tokens=1, now_ms=T0 + 1)

        return await asyncio.gather(lim.admit(_one(cat), 1, now_ms=T0 + 1), report())

    admitted, opened = run(scenario(), lim)

    assert isinstance(admitted, Admission)
    assert not opened


def test_a_dry_run_decides_without_taking_anything(make_limiter: Any) -> None:
    cat = catalog("  a: {provider: openai, base_url: x, model: a, rpm: 1}")
    lim: Limiter = make_limiter(cat)

    async def scenario() -> tuple[Any, Any, Any]:
        dry = await lim.admit(_one(cat), 1, dry_run=True, now_ms=T0)
        real = await lim.admit(_one(cat), 1, now_ms=T0)
        state = await lim.peek([cat.deployments["a"]], now_ms=T0)
        return dry, real, state

    dry, real, state = run(scenario(), lim)

    assert isinstance(dry, Admission) and dry.member == ""
    assert isinstance(real, Admission)
    assert state["a"].in_flight == 1 and state["a"].requests_in_window == 1


def test_many_workers_admitting_at_once_never_exceed_the_limit(redis_url: str) -> None:
    cat = catalog("  a: {provider: openai, base_url: x, model: a, rpm: 5}")

    async def scenario() -> list[Any]:
        workers = [Limiter(redis_url, cat.routing) for _ in range(4)]  # one per "process"
        try:
            return await asyncio.gather(*(w.admit(_one(cat), 1) for w in workers
                                          for _ in range(10)))
        finally:
            for w in workers:
                await w.aclose()

    results = run(scenario())

    assert sum(isinstance(r, Admission) for r in results) == 5


def test_an_unreachable_redis_is_an_error_not_a_free_pass() -> None:
    cat = catalog("  a: {provider: openai, base_url: x, model: a, rpm: 5}")
    lim = Limiter("redis://127.0.0.1:1/0", cat.routing)

    async def scenario() -> None:
        try:
            await lim.admit(_one(cat), 1)
        finally:
            await lim.aclose()

    with pytest.raises(RoutingStateError, match="does not answer"):
        run(scenario(), lim)
