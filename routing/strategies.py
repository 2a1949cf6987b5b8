"""Strategies: the order in which a model group tries its deployments for one request.

A strategy only orders; the limiter (``routing.limits``) then admits the first deployment of
that order that is healthy and has capacity, atomically in Redis. Two strategies depend on
state shared by every worker, so their final order is taken inside the same Redis script that
admits (a decision made from a snapshot read a moment earlier would send every concurrent
request of every worker to the same "least busy" deployment):

- ``least_in_flight`` sorts by calls in flight now (ties keep the weighted shuffle's order);
- ``lowest_latency`` sorts by the moving average of observed latency; a deployment never
  measured sorts first, so each gets tried and measured.

The others are decided here: ``weighted`` is a weighted shuffle (Efraimidis–Spirakis), so the
first choice follows the weights and the next choices, when the first has no capacity, do too;
``lowest_cost`` sorts by price (input + output per million tokens, after the batch discount);
``ordered`` keeps the group's list order.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from schemas.catalog import Deployment, Strategy

__all__ = ["Ordering", "SortKey", "order", "price_of", "weighted_shuffle"]

SortKey = Literal["", "in_flight", "latency"]


@dataclass(frozen=True)
class Ordering:
    """Deployments in the order to try, and the shared state to re-sort them by at admission."""

    deployments: tuple[Deployment, ...]
    sort_by: SortKey = ""


def weighted_shuffle(deployments: Sequence[Deployment], rng: random.Random) -> list[Deployment]:
    """A random order where each position is drawn in proportion to the remaining weights."""
    keyed = [(rng.random() ** (1.0 / d.weight), i) for i, d in enumerate(deployments)]
    keyed.sort(reverse=True)
    return [deployments[i] for _, i in keyed]


def price_of(deployment: Deployment) -> Decimal:
    """What ``lowest_cost`` compares: input + output USD per million tokens, discounted."""
    p = deployment.pricing
    return (p.input + p.output) * p.batch_discount


def _weighted(deps: Sequence[Deployment], rng: random.Random) -> Ordering:
    return Ordering(tuple(weighted_shuffle(deps, rng)))


def _least_in_flight(deps: Sequence[Deployment], rng: random.Random) -> Ordering:
    return Ordering(tuple(weighted_shuffle(deps, rng)), sort_by="in_flight")


def _lowest_latency(deps: Sequence[Deployment], rng: random.Random) -> Ordering:
    return Ordering(tuple(weighted_shuffle(deps, rng)), sort_by="latency")


def _lowest_cost(deps: Sequence[Deployment], rng: random.Random) -> Ordering:
    shuffled = weighted_shuffle(deps, rng)  # equal prices share the traffic by weight
    return Ordering(tuple(sorted(shuffled, key=price_of)))


def _ordered(deps: Sequence[Deployment], rng: random.Random) -> Ordering:
    return Ordering(tuple(deps))


_STRATEGIES: dict[Strategy, Callable[[Sequence[Deployment], random.Random], Ordering]] = {
    Strategy.WEIGHTED: _weighted,
    Strategy.LEAST_IN_FLIGHT: _least_in_flight,
    Strategy.LOWEST_LATENCY: _lowest_latency,
    Strategy.LOWEST_COST: _lowest_cost,
    Strategy.ORDERED: _ordered,
}


def order(strategy: Strategy, deployments: Sequence[Deployment],
          rng: random.Random) -> Ordering:
    """The order ``strategy`` tries ``deployments`` in (see the module docstring)."""
    return _STRATEGIES[strategy](deployments, rng)
