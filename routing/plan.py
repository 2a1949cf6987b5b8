"""A request's plan: the model groups it may use, in order, each with its eligible deployments.

Built once per attempt from the catalog alone (no Redis): it applies the job's required tags
(never relaxed: a deployment without them is never eligible, in any fallback group), the
context-window check, and the strategy (the job's override, else each group's own).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from routing.fallbacks import chain
from routing.tokens import TokenEstimate
from schemas.catalog import Catalog, Deployment, Strategy
from schemas.errors import NoDeploymentError
from schemas.jobs import RoutingOptions

__all__ = ["Plan", "Step", "make_plan"]


@dataclass(frozen=True)
class Step:
    """One model group of the chain and its deployments this request may use."""

    model: str
    strategy: Strategy
    deployments: tuple[Deployment, ...]


@dataclass(frozen=True)
class Plan:
    """Where one request may go, in order."""

    model: str
    tokens: TokenEstimate
    reserve: int
    """Tokens held against tpm limits until the call's real usage is known."""
    tags: dict[str, str] = field(default_factory=dict)
    steps: tuple[Step, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    """(model group, why) for groups of the chain this request cannot use."""

    def step_of(self, model: str) -> Step:
        return next(step for step in self.steps if step.model == model)


def _eligible(deps: list[Deployment], tags: dict[str, str], tokens: TokenEstimate
              ) -> tuple[list[Deployment], str]:
    tagged = [d for d in deps if d.has_tags(tags)]
    if not tagged:
        wanted = ", ".join(f"{k}={v}" for k, v in tags.items())
        return [], f"no deployment has tags {wanted}"
    fits = [d for d in tagged if d.context_window is None or tokens.window <= d.context_window]
    if not fits:
        largest = max(d.context_window or 0 for d in tagged)
        return [], (f"the request needs ~{tokens.window} tokens, more than its context "
                    f"window ({largest})")
    return fits, ""


def make_plan(catalog: Catalog, group: str, tokens: TokenEstimate,
              options: RoutingOptions | None = None) -> Plan:
    """The plan for a request to model group ``group``; NoDeploymentError if nothing fits."""
    override = options.strategy if options else None
    tags = dict(options.require_tags) if options else {}
    steps: list[Step] = []
    skipped: list[tuple[str, str]] = []
    for name in chain(catalog, group):
        deps, why = _eligible(catalog.members(name), tags, tokens)
        if deps:
            strategy = override or catalog.models[name].strategy
            steps.append(Step(name, strategy, tuple(deps)))
        else:
            skipped.append((name, why))
    if not steps:
        reasons = "; ".join(f"{name}: {why}" for name, why in skipped)
        raise NoDeploymentError(f"no deployment can serve model {group!r}: {reasons}")
    reserve = tokens.reserve(catalog.routing.default_completion_tokens)
    return Plan(model=group, tokens=tokens, reserve=reserve, tags=tags, steps=tuple(steps),
                skipped=tuple(skipped))
