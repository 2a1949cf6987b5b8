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
    (GOOD.replace("deployments: [a]", "deployments: [zz]"), "unknown deployment 'zz'"),
    (GOOD.replace("model: up,", ""), "c.yaml: deployments.a.model: Field required"),
    (GOOD.replace("api_key_env: KEY,", "api_key: sk-inline,"), "deployments.a.api_key"),
    ("just a string", "must be a mapping"),
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
