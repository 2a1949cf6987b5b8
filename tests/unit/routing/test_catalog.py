"""Catalog loading: errors name the file, the key path and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from routing.catalog import load_catalog, parse_catalog
from schemas.errors import ConfigError

GOOD = """
deployments:
  a: {provider: openai, base_url: "http://x/v1", model: up, api_key_env: KEY,
      pricing: {input: "0.15", output: "0.6"}}
models:
  m: {aliases: [mm], deployments: [a]}
"""


def test_a_good_catalog_resolves_names_and_fills_secrets() -> None:
    cat = parse_catalog(GOOD, "c.yaml", secrets={"KEY": "sk-1"}.get)
    assert cat.public_names() == {"m": "m", "mm": "m"}
    assert cat.deployments["a"].name == "a"
    assert cat.deployments["a"].api_key is not None
    assert cat.deployments["a"].api_key.get_secret_value() == "sk-1"
    assert "sk-1" not in repr(cat)


@pytest.mark.parametrize(("text", "message"), [
    (GOOD.replace('input: "0.15"', 'input: "-1"'), "c.yaml: deployments.a.pricing.input"),
    (GOOD.replace("deployments: [a]", "deployments: [zz]"),
     "c.yaml: models.m.deployments: unknown deployment 'zz'"),
    (GOOD.replace("model: up,", ""), "c.yaml: deployments.a.model: Field required"),
    (GOOD.replace("api_key_env: KEY,", "api_key: sk-inline,"), "deployments.a.api_key"),
    ("just a string", "must be a mapping"),
    (GOOD.replace("deployments: [a]}", "deployments: [a], fallbacks: [zz]}"),
     "c.yaml: models.m.fallbacks: unknown model 'zz'"),
    (GOOD.replace("deployments: [a]}", "deployments: [a], fallbacks: [m]}"),
     "c.yaml: models.m.fallbacks: a model cannot fall back to itself"),
    (GOOD.replace("deployments: [a]}", "deployments: [a], strategy: fastest}"),
     "c.yaml: models.m.strategy: Input should be 'weighted'"),
    (GOOD.replace("model: up,", "model: up, rpm: 0,"), "c.yaml: deployments.a.rpm: Input should"
     " be greater than or equal to 1"),
    (GOOD.replace("model: up,", "model: up, tags: [eu],"), "c.yaml: deployments.a.tags"),
    (GOOD + "routing: {when_unavailable: maybe}\n", "c.yaml: routing.when_unavailable"),
    (GOOD + "routing: {breaker: {cooldown: 3}}\n", "c.yaml: routing.breaker.cooldown: Extra"),
    ("a: [", "not valid YAML"),
])
def test_errors_name_file_key_and_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_catalog(text, "c.yaml")
    assert message in str(info.value)


def test_a_missing_secret_is_named() -> None:
    with pytest.raises(ConfigError, match="api_key_env: environment variable KEY is not set"):
        parse_catalog(GOOD, "c.yaml", secrets={}.get)


def test_a_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BATCHYARD_CONFIG"):
        load_catalog(tmp_path / "nope.yaml")


def test_limits_tags_and_routing_read_as_written() -> None:
    text = GOOD.replace("model: up,", "model: up, rpm: 60, tpm: 9000, max_concurrency: 4, "
                        "limit_window_s: 5, context_window: 8000, tags: {region: eu, gdpr: true},")
    dep = parse_catalog(text + "routing: {when_unavailable: fail}\n", "c.yaml").deployments["a"]
    assert (dep.rpm, dep.tpm, dep.max_concurrency, dep.limit_window_s) == (60, 9000, 4, 5.0)
    assert dep.context_window == 8000
    assert dep.tags == {"region": "eu", "gdpr": "true"}  # YAML's true compares as text
    assert dep.has_tags({"region": "eu"}) and not dep.has_tags({"region": "us"})
