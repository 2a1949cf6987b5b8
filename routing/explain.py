"""Why a request for a model would go where it goes, now: the data behind ``routes explain``.

It builds the same plan a worker builds (tags, context window, fallbacks, strategy), reads each
deployment's shared state (breaker, cooldown, limits in use, latency), and asks the limiter for
a dry-run admission: the decision a worker would take at this moment, without taking it.
"""

from __future__ import annotations

from dataclasses import dataclass

from routing.fallbacks import chain
from routing.health import DeploymentState
from routing.limits import Refusal
from routing.plan import Plan, make_plan
from routing.router import Router, Ticket
from routing.tokens import TokenEstimate
from schemas.catalog import Deployment
from schemas.errors import NoDeploymentError, RoutingStateError
from schemas.jobs import RoutingOptions

__all__ = ["Candidate", "Explanation", "explain"]


@dataclass(frozen=True)
class Candidate:
    """One deployment of the chain: whether this request may use it, and its state now."""

    model: str
    deployment: Deployment
    excluded: str
    """Why the request may not use it ("" when eligible)."""
    state: DeploymentState | None


@dataclass(frozen=True)
class Explanation:
    """The plan, the state of every deployment in it, and the decision."""

    model: str
    group: str
    chain: list[str]
    strategies: dict[str, str]
    candidates: list[Candidate]
    decision: str
    state_error: str = ""


def _excluded(dep: Deployment, options: RoutingOptions, tokens: TokenEstimate) -> str:
    missing = [f"{k}={v}" for k, v in options.require_tags.items() if dep.tags.get(k) != v]
    if missing:
        return "lacks tag " + ", ".join(missing)
    if dep.context_window is not None and tokens.window > dep.context_window:
        return f"context window {dep.context_window} < {tokens.window} tokens"
    return ""


def _decide(got: Ticket | Refusal | None, plan: Plan, policy: str) -> str:
    if isinstance(got, Ticket):
        probe = " as the breaker's half-open probe" if got.admission.probe else ""
        return f"would take {got.deployment.name} (model {got.model}){probe}"
    if isinstance(got, Refusal) and got.saturated:
        return f"would wait {got.wait_s:.1f}s for capacity: {got.describe()}"
    if isinstance(got, Refusal):
        verb = "fail (routing.when_unavailable: fail)" if policy == "fail" else \
            f"wait {got.wait_s:.1f}s for a healthy deployment"
        return f"would {verb}: {got.describe()}"
    return "no deployment left to try"


async def explain(router: Router, model: str, options: RoutingOptions | None = None,
                  tokens: TokenEstimate | None = None) -> Explanation:
    """What a request for ``model`` with ``options`` (and ~``tokens``) would do now."""
    options = options or RoutingOptions()
    tokens = tokens or TokenEstimate(prompt=0, output=None)
    group = router.resolve(model)
    catalog = router.catalog
    names = chain(catalog, group)
    deps = {d.name: d for name in names for d in catalog.members(name)}
    states: dict[str, DeploymentState] = {}
    state_error = ""
    if router.limiter is not None:
        try:
            states = await router.limiter.peek(list(deps.values()))
        except RoutingStateError as exc:
            state_error = str(exc)
    candidates = [Candidate(name, dep, _excluded(dep, options, tokens), states.get(dep.name))
                  for name in names for dep in catalog.members(name)]
    try:
        plan = make_plan(catalog, group, tokens, options)
    except NoDeploymentError as exc:
        decision = f"would fail: {exc}"
    else:
        strategies = {step.model: step.strategy.value for step in plan.steps}
        try:
            decision = _decide(await router.acquire(plan, dry_run=True), plan,
                               router.policy.when_unavailable)
        except RoutingStateError as exc:
            decision, state_error = "would wait: the routing state does not answer", str(exc)
        return Explanation(model, group, names, strategies, candidates, decision, state_error)
    strategies = {name: (options.strategy or catalog.models[name].strategy.value)
                  for name in names}
    return Explanation(model, group, names, strategies, candidates, decision, state_error)
