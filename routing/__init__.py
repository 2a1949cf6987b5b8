"""Model catalog, deployment selection, shared limits and health, fallbacks, pricing and retry
policy. Knows no wire format (``providers`` does)."""

from __future__ import annotations

from routing.catalog import load_catalog, parse_catalog
from routing.explain import Explanation, explain
from routing.health import DeploymentState, Verdict, verdict_for
from routing.limits import Admission, Limiter, Refusal
from routing.plan import Plan, Step, make_plan
from routing.pricing import cost_of
from routing.retry import retry_delay
from routing.router import Router, Ticket
from routing.tokens import TokenEstimate, estimate_tokens
from routing.trail import Trail

__all__ = [
    "Admission",
    "DeploymentState",
    "Explanation",
    "Limiter",
    "Plan",
    "Refusal",
    "Router",
    "Step",
    "Ticket",
    "TokenEstimate",
    "Trail",
    "Verdict",
    "cost_of",
    "estimate_tokens",
    "explain",
    "load_catalog",
    "make_plan",
    "parse_catalog",
    "retry_delay",
    "verdict_for",
]
