"""Plans: required tags, the context-window fallback, chains, strategy overrides, estimates."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from routing.fallbacks import chain
from routing.plan import make_plan
from routing.tokens import TokenEstimate, estimate_tokens
from schemas.catalog import Strategy
from schemas.chat import ChatRequest
from schemas.errors import NoDeploymentError
from schemas.jobs import RoutingOptions
from tests.unit.routing.conftest import catalog

CAT = catalog(
    "  eu: {provider: openai, base_url: x, model: e, context_window: 1000,"
    " tags: {region: eu}}\n"
    "  us: {provider: openai, base_url: x, model: u, context_window: 1000,"
    " tags: {region: us}}\n"
    "  big-us: {provider: openai, base_url: x, model: bu, context_window: 100000,"
    " tags: {region: us}}\n"
    "  big-eu: {provider: openai, base_url: x, model: be, context_window: 100000,"
    " tags: {region: eu}}",
    models="  small: {deployments: [eu, us], fallbacks: [large]}\n"
           "  large: {deployments: [big-us, big-eu], strategy: ordered, fallbacks: [small]}")
SHORT = TokenEstimate(prompt=100, output=None)
LONG = TokenEstimate(prompt=5000, output=None)


def _steps(tokens: TokenEstimate, **options: object) -> list[tuple[str, list[str]]]:
    plan = make_plan(CAT, "small", tokens, RoutingOptions(**options))  # type: ignore[arg-type]
    return [(s.model, [d.name for d in s.deployments]) for s in plan.steps]


def test_a_chain_is_breadth_first_and_survives_cycles() -> None:
    assert chain(CAT, "small") == ["small", "large"]
    assert chain(CAT, "large") == ["large", "small"]


def test_required_tags_hold_in_every_group_of_the_chain() -> None:
    assert _steps(SHORT, require_tags={"region": "eu"}) == [("small", ["eu"]),
                                                            ("large", ["big-eu"])]


def test_a_prompt_too_long_for_a_group_starts_at_a_fallback_that_fits() -> None:
    plan = make_plan(CAT, "small", LONG)
    assert [(s.model, [d.name for d in s.deployments]) for s in plan.steps] == [
        ("large", ["big-us", "big-eu"])]
    assert plan.skipped == (("small", "the request needs ~5000 tokens, more than its context "
                                      "window (1000)"),)


def test_the_requested_output_must_fit_the_window_too() -> None:
    assert _steps(TokenEstimate(prompt=600, output=500))[0][0] == "large"


def test_nothing_eligible_is_a_clear_error() -> None:
    with pytest.raises(NoDeploymentError, match="no deployment has tags region=mars"):
        make_plan(CAT, "small", SHORT, RoutingOptions(require_tags={"region": "mars"}))


def test_a_jobs_strategy_overrides_every_group() -> None:
    plan = make_plan(CAT, "small", SHORT, RoutingOptions(strategy=Strategy.LOWEST_COST))
    assert {s.strategy for s in plan.steps} == {Strategy.LOWEST_COST}
    assert make_plan(CAT, "small", SHORT).steps[1].strategy is Strategy.ORDERED
    with pytest.raises(ValidationError, match="Input should be 'weighted'"):
        RoutingOptions(strategy="fastest")  # type: ignore[arg-type]  # rejected at submit


def test_the_estimate_is_about_four_characters_per_token() -> None:
    req = ChatRequest.model_validate({"model": "m", "max_tokens": 50, "messages": [
        {"role": "system", "content": "x" * 400},
        {"role": "user", "content": [{"type": "text", "text": "y" * 400},
                                     {"type": "image_url", "image_url": {"url": "u"}}]}]})
    est = estimate_tokens(req)
    # 800 chars / 4 + 2 messages × 4 + 3 + one image
    assert est.prompt == 200 + 8 + 3 + 765
    assert est.window == est.prompt + 50
    assert est.reserve(default_completion=256) == est.prompt + 50
    assert TokenEstimate(prompt=10, output=None).reserve(default_completion=256) == 266
