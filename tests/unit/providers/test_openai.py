"""The OpenAI-compatible family: each preset's URL, auth and the fields it spells differently."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from providers.openai import OpenAICompatible
from providers.registry import PROVIDERS
from schemas.catalog import Deployment
from schemas.chat import ChatRequest

REQ = ChatRequest.model_validate({
    "model": "house-model", "messages": [{"role": "user", "content": "hi"}],
    "max_completion_tokens": 50, "seed": 3, "user": "u-1",
})

PRESETS = [
    ("openai", "https://api.openai.com/v1", "authorization", "Bearer key"),
    ("groq", "https://api.groq.com/openai/v1", "authorization", "Bearer key"),
    ("together", "https://api.together.xyz/v1", "authorization", "Bearer key"),
    ("mistral", "https://api.mistral.ai/v1", "authorization", "Bearer key"),
    ("fireworks", "https://api.fireworks.ai/inference/v1", "authorization", "Bearer key"),
    ("deepseek", "https://api.deepseek.com/v1", "authorization", "Bearer key"),
    ("openrouter", "https://openrouter.ai/api/v1", "authorization", "Bearer key"),
    ("vllm", "http://10.0.0.5:8000/v1", "authorization", "Bearer key"),
    ("llamacpp", "http://127.0.0.1:8080/v1", "authorization", "Bearer key"),
    ("ollama", "http://127.0.0.1:11434/v1", "authorization", "Bearer key"),
]


def _build(name: str, base_url: str, **overrides: Any) -> httpx.Request:
    deployment = Deployment(provider=name, base_url=base_url, model="up-model", api_key="key",
                            **overrides)
    return PROVIDERS[name].build_request(REQ, deployment)


@pytest.mark.parametrize(("name", "base_url", "header", "value"), PRESETS)
def test_preset_posts_chat_completions_with_its_auth(
    name: str, base_url: str, header: str, value: str
) -> None:
    request = _build(name, base_url + "/")

    assert isinstance(PROVIDERS[name], OpenAICompatible)
    assert str(request.url) == base_url + "/chat/completions"
    assert request.headers[header] == value
    assert json.loads(request.content)["model"] == "up-model"


@pytest.mark.parametrize("name", ["together", "mistral", "fireworks", "deepseek", "openrouter",
                                  "llamacpp", "ollama"])
def test_providers_knowing_only_max_tokens_get_it(name: str) -> None:
    body = json.loads(_build(name, "https://x.test/v1").content)

    assert body["max_tokens"] == 50
    assert "max_completion_tokens" not in body


@pytest.mark.parametrize("name", ["openai", "azure", "groq", "vllm"])
def test_max_completion_tokens_is_kept_where_understood(name: str) -> None:
    body = json.loads(_build(name, "https://x.test/v1").content)

    assert body["max_completion_tokens"] == 50


def test_mistral_spells_seed_random_seed_and_refuses_user() -> None:
    body = json.loads(_build("mistral", "https://api.mistral.ai/v1").content)

    assert body["random_seed"] == 3
    assert "seed" not in body and "user" not in body


def test_azure_uses_deployment_path_api_version_and_api_key_header() -> None:
    request = _build("azure", "https://res.openai.azure.com")

    assert str(request.url) == (
        "https://res.openai.azure.com/openai/deployments/up-model/chat/completions"
        "?api-version=2024-10-21"
    )
    assert request.headers["api-key"] == "key"
    assert "authorization" not in request.headers


def test_azure_api_version_comes_from_the_deployment_when_set() -> None:
    request = _build("azure", "https://res.openai.azure.com", api_version="2025-04-01-preview")

    assert request.url.params["api-version"] == "2025-04-01-preview"


def test_keyless_local_servers_send_no_auth_header() -> None:
    deployment = Deployment(provider="ollama", base_url="http://127.0.0.1:11434/v1", model="m")

    request = PROVIDERS["ollama"].build_request(REQ, deployment)

    assert "authorization" not in request.headers


def test_neutral_value_of_an_unsupported_field_is_omitted_not_rejected() -> None:
    req = ChatRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                      "logprobs": False})
    deployment = Deployment(provider="groq", base_url="https://api.groq.com/openai/v1", model="m",
                            unsupported_params="reject")

    body = json.loads(PROVIDERS["groq"].build_request(req, deployment).content)

    assert "logprobs" not in body


def test_omit_accepts_only_inert_fields() -> None:
    with pytest.raises(ValueError, match="inert"):
        OpenAICompatible("x", omit=frozenset({"temperature"}))


def test_a_success_keeps_the_body_text_as_the_upstream_sent_it() -> None:
    provider = PROVIDERS["openai"]
    assert isinstance(provider, OpenAICompatible)
    sent = ('{ "id": "chatcmpl-1", "object": "chat.completion",\n  "choices": [{"index": 0, '
            '"message": {"role": "assistant", "content": "Grüße ✓"}, "finish_reason": "stop"}],'
            '\n  "usage": {"prompt_tokens": 3, "completion_tokens": 2} }').encode()

    fast = provider.parse_wire(200, {}, sent)
    full = provider.parse_response(httpx.Response(200, content=sent))

    assert fast is not None
    assert fast.text == full.text == sent.decode()  # stored as it came, not serialised again
    assert json.loads(fast.text) == fast.body


def test_a_body_in_a_one_element_list_is_serialised_again() -> None:
    provider = PROVIDERS["openai"]
    assert isinstance(provider, OpenAICompatible)
    sent = b'[{"id": "x", "choices": [], "usage": {"prompt_tokens": 1}}]'

    result = provider.parse_response(httpx.Response(200, content=sent))

    assert result.text is None
    assert result.body["id"] == "x"
