"""Each strategy's order; the two that read shared state are checked against real Redis."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from routing.health import Verdict
from routing.limits import Admission, Limiter
from routing.strategies import order, weighted_shuffle
from schemas.catalog import Strategy
from tests.unit.routing.conftest import T0, catalog, run

CAT = catalog(
    '  a: {provider: openai, base_url: x, model: a, weight: 1,'
    ' pricing: {input: "1", output: "4"}}\n'
    '  b: {provider: openai, base_url: x, model: b, weight: 2,'
    ' pricing: {input: "0.1", output: "0.4"}}\n'
    '  c: {provider: openai, base_url: x, model: c, weight: 7,'
    ' pricing: {input: "1", output: "4", batch_discount: "0.5"}}',
    models="  m: {deployments: [a, b, c]}")
DEPS = CAT.members("m")


def _names(strategy: Strategy, rng: random.Random) -> list[str]:
    return [d.name for d in order(strategy, DEPS, rng).deployments]


def test_weighted_first_choices_follow_the_weights() -> None:
    rng = random.Random(7)
    firsts = Counter(weighted_shuffle(DEPS, rng)[0].name for _ in range(20_000))
    shares = {name: n / 20_000 for name, n in firsts.items()}
    assert abs(shares["a"] - 0.1) < 0.01
    assert abs(shares["b"] - 0.2) < 0.01
    assert abs(shares["c"] - 0.7) < 0.01


def test_weighted_orders_hold_every_deployment_once() -> None:
    rng = random.Random(1)
    assert all(sorted(_names(Strategy.WEIGHTED, rng)) == ["a", "b", "c"] for _ in range(100))


def test_lowest_cost_puts_the_cheapest_first_after_discounts() -> None:
    # b: 0.5 per 1M in+out; c: 5 × 0.5 = 2.5; a: 5
    assert _names(Strategy.LOWEST_COST, random.Random(1)) == ["b", "c", "a"]


def test_ordered_keeps_the_groups_list_order() -> None:
    assert all(_names(Strategy.ORDERED, random.Random(s)) == ["a", "b", "c"] for s in range(20))


def test_least_in_flight_spreads_calls_over_every_worker(make_limiter: Any) -> None:
    lim: Limiter = make_limiter(CAT)
    ordering = order(Strategy.LEAST_IN_FLIGHT, DEPS, random.Random(3))

    async def scenario() -> Counter[str]:
        held = [await lim.admit(ordering, 1, now_ms=T0) for _ in range(9)]
        return Counter(h.deployment.name for h in held if isinstance(h, Admission))

    # whatever the weights, nine calls in flight end up three on each
    assert run(scenario(), lim) == Counter({"a": 3, "b": 3, "c": 3})


def test_lowest_latency_tries_the_unmeasured_then_keeps_to_the_fastest(make_limiter: Any
                                                                       ) -> None:
    lim: Limiter = make_limiter(CAT)
    rng = random.Random(5)

    async def scenario() -> list[str]:
        picks = []
        for i in range(5):
            got = await lim.admit(order(Strategy.LOWEST_LATENCY, DEPS, rng), 1, now_ms=T0 + i)
            assert isinstance(got, Admission)
            picks.append(got.deployment.name)
            measured = {"a": 900.0, "b": 100.0, "c": 400.0}[got.deployment.name]
            await lim.settle(got, Verdict.OK, tokens=1, latency_ms=measured, now_ms=T0 + i)
        return picks

    picks = run(scenario(), lim)

    assert sorted(picks[:3]) == ["a", "b", "c"]  # each unmeasured one is tried once
    assert picks[3:] == ["b", "b"]
