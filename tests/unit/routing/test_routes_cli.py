"""``batchyard routes check`` and ``routes explain``: what an operator reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from batchyard.routes_cli import routes
from routing.health import Verdict
from routing.limits import Admission, Limiter
from routing.strategies import Ordering
from schemas.settings import Settings
from tests.unit.routing.conftest import run

CATALOG = """
deployments:
  eu: {provider: openai, base_url: "http://x/v1", model: e, api_key_env: BY_TEST_UNSET_KEY,
       rpm: 10, limit_window_s: 5, context_window: 1000, tags: {region: eu}}
  us: {provider: openai, base_url: "http://x/v1", model: u, weight: 3, context_window: 1000,
       tags: {region: us}}
  big: {provider: openai, base_url: "http://x/v1", model: b, context_window: 100000}
models:
  small: {aliases: [s], deployments: [eu, us], fallbacks: [large]}
  large: {deployments: [big], strategy: ordered}
routing: {when_unavailable: fail, breaker: {consecutive_failures: 2, cooldown_s: 60}}
"""


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG)
    return Settings(config=path, redis_url=redis_url)


def _invoke(settings: Settings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(routes, list(args), obj=settings)
    return result.exit_code, result.output


def test_check_prints_the_resolved_models_and_deployments(settings: Settings) -> None:
    code, out = _invoke(settings, "check")

    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split() == ["model", "aliases", "strategy", "deployments", "fallbacks"]
    assert lines[1].split() == ["small", "s", "weighted", "eu,us", "large"]
    eu = next(line for line in lines if line.startswith("eu "))
    assert "10 req/5s" in eu and "region=eu" in eu and "BY_TEST_UNSET_KEY (unset)" in eu
    assert "when unavailable: fail; breaker: 2 in a row" in out
    assert out.rstrip().endswith("OK, 2 models, 3 deployments")


@pytest.mark.parametrize(("edit", "message"), [
    (("provider: openai, base_url: \"http://x/v1\", model: e", "provider: openia, base_url: "
      "\"http://x/v1\", model: e"), "deployments.eu.provider: unknown provider 'openia'"),
    (("fallbacks: [large]", "fallbacks: [huge]"), "models.small.fallbacks: unknown model 'huge'"),
    (("rpm: 10", "rpm: -1"), "deployments.eu.rpm: Input should be greater than or equal to 1"),
])
def test_check_names_the_file_the_key_and_the_problem(settings: Settings, tmp_path: Path,
                                                      edit: tuple[str, str], message: str
                                                      ) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(CATALOG.replace(*edit))

    code, out = _invoke(settings, "check", str(bad))

    assert code == 1
    assert f"{bad}: {message}" in out


def test_explain_shows_the_decision_and_every_deployments_state(settings: Settings) -> None:
    code, out = _invoke(settings, "explain", "s")

    assert code == 0, out
    assert out.splitlines()[0] == "model s → group small; chain: small → large"
    assert "strategy: small weighted, large ordered" in out
    assert "decision: would take" in out
    assert out.count("closed") == 3


def test_explain_honours_tags_and_an_open_breaker(settings: Settings) -> None:
    cat_path = settings.config
    from routing.catalog import load_catalog

    cat = load_catalog(cat_path)
    lim = Limiter(settings.redis_url, cat.routing)

    async def break_eu() -> None:
        for _ in range(2):
            got = await lim.admit(Ordering((cat.deployments["eu"],)), 1)
            assert isinstance(got, Admission)
            await lim.settle(got, Verdict.FAIL, tokens=1)

    run(break_eu(), lim)

    code, out = _invoke(settings, "explain", "small", "--tag", "region=eu")

    assert code == 0, out
    us = next(line for line in out.splitlines() if line.split()[1:2] == ["us"])
    assert us.endswith("lacks tag region=eu")
    eu = next(line for line in out.splitlines() if line.split()[1:2] == ["eu"])
    assert " open 59." in eu or " open 60." in eu
    assert "decision: would fail (routing.when_unavailable: fail): eu: breaker open" in out


def test_explain_sends_a_long_prompt_to_the_fallback(settings: Settings) -> None:
    code, out = _invoke(settings, "explain", "small", "--tokens", "5000")

    assert code == 0, out
    assert "context window 1000 < 5000 tokens" in out
    assert "decision: would take big (model large)" in out
