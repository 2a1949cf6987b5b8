"""The provider contract: every adapter against recorded wire fixtures.

``tests/fixtures/providers/<provider>/`` holds, for each provider under contract:

- ``deployment.json``: the deployment the fixtures belong to (test credentials);
- ``request_<case>.json``: a shared unified request (``requests/<case>.json``) and the method,
  URL, headers and exact body the provider must receive;
- ``response_<case>.json``: a recorded answer (status, headers, body as the provider documents
  it) and the normalised ``chat.completion`` it must become;
- ``error_<case>.json``: a recorded error and the class, status and retry-after it maps to.

The same tests also hold every registered provider to the unsupported-parameter rule.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from providers.base import WireProvider
from providers.openai import OpenAICompatible
from providers.params import INERT_PARAMS, STRUCTURAL_FIELDS
from providers.registry import PROVIDERS
from schemas.catalog import Deployment
from schemas.chat import ChatRequest, Usage
from schemas.errors import BadRequestError, UpstreamError

FIXTURES = Path(__file__).parents[2] / "fixtures" / "providers"
UNDER_CONTRACT = ("openai", "azure", "anthropic", "gemini", "bedrock")
REQUIRED = {
    "request_text", "request_multimodal", "request_tools", "request_json_schema",
    "response_text", "response_multipart", "response_tool_call", "response_length",
    "error_rate_limited", "error_overloaded", "error_server", "error_authentication",
    "error_bad_request", "error_context_length",
}


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _cases(kind: str) -> list[Any]:
    return [
        pytest.param(name, path, id=f"{name}/{path.stem}")
        for name in UNDER_CONTRACT
        for path in sorted((FIXTURES / name).glob(f"{kind}_*.json"))
    ]


def _deployment(name: str, **overrides: Any) -> Deployment:
    return Deployment(name=f"{name}-test", **{**_load(FIXTURES / name / "deployment.json"),
                                              **overrides})


def _needs_signer(name: str) -> None:
    if name == "bedrock":
        pytest.importorskip("botocore", reason="Bedrock signing needs the bedrock extra")


def _recorded(name: str, fixture: dict[str, Any]) -> httpx.Response:
    """A recorded answer, attached to the request it answers (as the client would have it)."""
    url = _load(FIXTURES / name / "request_text.json")["url"]
    return httpx.Response(
        fixture["status"],
        headers=fixture["headers"],
        content=json.dumps(fixture["body"]).encode(),
        request=httpx.Request("POST", url),
    )


@pytest.mark.parametrize("name", UNDER_CONTRACT)
def test_every_provider_has_the_whole_fixture_set(name: str) -> None:
    stems = {p.stem for p in (FIXTURES / name).glob("*.json")}
    assert stems >= REQUIRED, f"{name} lacks {sorted(REQUIRED - stems)}"
    assert {"error_content_filter", "response_content_filter"} & stems
    assert name in PROVIDERS


@pytest.mark.parametrize(("name", "path"), _cases("request"))
def test_request_building(name: str, path: Path) -> None:
    _needs_signer(name)
    fixture = _load(path)
    req = ChatRequest.model_validate(_load(FIXTURES / fixture["request"]))

    built = PROVIDERS[name].build_request(req, _deployment(name))

    assert built.method == fixture["method"]
    assert str(built.url) == fixture["url"]
    for header, value in fixture["headers"].items():
        assert built.headers.get(header) == value, header
    for header in fixture["absent_headers"]:
        assert header not in built.headers
    assert json.loads(built.content) == fixture["body"]
    assert "house-model" not in built.content.decode()  # our alias never leaks upstream


@pytest.mark.parametrize(("name", "path"), _cases("response"))
def test_response_parsing(name: str, path: Path) -> None:
    fixture = _load(path)
    expect = fixture["expect"]

    result = PROVIDERS[name].parse_response(_recorded(name, fixture))

    body = result.body
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    message = choice["message"]
    assert message["role"] == "assistant"
    assert message["content"] == expect["content"]
    assert choice["finish_reason"] == expect["finish_reason"]
    calls = message.get("tool_calls") or []
    assert all(c["type"] == "function" and isinstance(c["function"]["arguments"], str)
               for c in calls)
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in calls] == [(t["id"], t["name"], t["arguments"]) for t in expect["tool_calls"]]
    assert result.usage == Usage(**expect["usage"])
    usage = body["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens)
    assert usage["prompt_tokens_details"]["cached_tokens"] == result.usage.cached_tokens
    for key, actual in (("request_id", result.request_id), ("model", body["model"]),
                        ("created", body["created"]), ("id", body["id"])):
        if key in expect:
            assert actual == expect[key], key


@pytest.mark.parametrize(("name", "path"), _cases("error"))
def test_error_mapping(name: str, path: Path) -> None:
    fixture = _load(path)
    expect = fixture["expect"]

    with pytest.raises(UpstreamError) as raised:
        PROVIDERS[name].parse_response(_recorded(name, fixture))

    error = raised.value
    assert type(error).__name__ == expect["error"]
    assert (error.provider, error.status, error.retry_after) == (
        name, expect["status"], expect["retry_after"])
    assert error.describe().startswith(f"{name} {expect['status']}: ")
    assert expect.get("message_contains", "") in error.message


# --- The worker's byte path (WireProvider) agrees with the httpx path, fixture by fixture ---

def _wire(name: str) -> WireProvider:
    provider = PROVIDERS[name]
    assert isinstance(provider, WireProvider)
    return provider


def _wire_cases(*kinds: str) -> list[Any]:
    """The fixtures of the providers with a byte path (the others go through httpx only)."""
    return [case for kind in kinds for case in _cases(kind)
            if isinstance(PROVIDERS[case.values[0]], WireProvider)]


def test_every_openai_compatible_provider_has_the_byte_path() -> None:
    assert {name for name in UNDER_CONTRACT if isinstance(PROVIDERS[name], WireProvider)} == {
        name for name in UNDER_CONTRACT if isinstance(PROVIDERS[name], OpenAICompatible)}


@pytest.mark.parametrize(("name", "path"), _wire_cases("request"))
def test_the_wire_request_is_the_built_request(name: str, path: Path) -> None:
    provider = _wire(name)
    req = ChatRequest.model_validate(_load(FIXTURES / _load(path)["request"]))

    built = provider.build_request(req, _deployment(name))
    wire = provider.wire_request(req, _deployment(name))

    assert (wire.url, wire.body) == (built.url, built.content)
    assert {k.lower(): v for k, v in wire.headers.items()}.items() <= built.headers.items()


@pytest.mark.parametrize(("name", "path"), _wire_cases("response", "error"))
def test_the_wire_parser_agrees_with_parse_response_or_hands_over(name: str,
                                                                  path: Path) -> None:
    provider = _wire(name)
    recorded = _recorded(name, _load(path))

    fast = provider.parse_wire(recorded.status_code, recorded.headers, recorded.content)

    try:
        full = provider.parse_response(recorded)
    except UpstreamError:
        assert fast is None  # every error is left to parse_response
    else:
        assert fast == full


# --- Parameters a provider cannot honour: every registered provider ------------------------

_SAMPLES: dict[str, Any] = {
    "seed": 7,
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "top_logprobs": 2,
    "presence_penalty": 0.5,
    "frequency_penalty": 0.5,
    "response_format": {"type": "json_object"},
    "reasoning_effort": "low",
    "parallel_tool_calls": False,
    "user": "end-user-1",
    "metadata": {"team": "search"},
}
_TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
_BASE = {"model": "house-model", "messages": [{"role": "user", "content": "hi"}], "tools": _TOOLS}
_UNSUPPORTED = [
    pytest.param(name, field, id=f"{name}/{field}")
    for name, provider in PROVIDERS.items()
    for field in sorted(provider.params.unsupported)
    if field in _SAMPLES
]


def _any_deployment(name: str, **overrides: Any) -> Deployment:
    path = FIXTURES / name / "deployment.json"
    if path.exists():
        return _deployment(name, **overrides)
    return Deployment(name=f"{name}-test", provider=name, base_url="https://upstream.test/v1",
                      model="m-1", api_key="k", **overrides)


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_every_request_field_is_translated_or_declared_unsupported(name: str) -> None:
    params = PROVIDERS[name].params
    assert not params.supported & params.unsupported
    declared = params.supported | params.unsupported | STRUCTURAL_FIELDS | INERT_PARAMS
    assert declared == set(ChatRequest.model_fields)


@pytest.mark.parametrize(("name", "field"), _UNSUPPORTED)
def test_unsupported_parameter_is_rejected_before_any_call(name: str, field: str) -> None:
    req = ChatRequest.model_validate({**_BASE, field: _SAMPLES[field]})

    with pytest.raises(BadRequestError) as raised:
        PROVIDERS[name].build_request(req, _any_deployment(name, unsupported_params="reject"))

    assert raised.value.provider == name
    assert raised.value.status is None
    assert field in str(raised.value) and name in str(raised.value)


@pytest.mark.parametrize(("name", "field"), _UNSUPPORTED)
def test_unsupported_parameter_is_dropped_and_nothing_else_changes(name: str, field: str) -> None:
    _needs_signer(name)
    deployment = _any_deployment(name)
    plain = ChatRequest.model_validate(_BASE)
    with_field = ChatRequest.model_validate({**_BASE, field: _SAMPLES[field]})

    built = PROVIDERS[name].build_request(with_field, deployment)

    assert json.loads(built.content) == json.loads(
        PROVIDERS[name].build_request(plain, deployment).content)
