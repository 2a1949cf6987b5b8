"""Anthropic specifics beyond the contract: token limit defaults, image links, tool options."""

from __future__ import annotations

import json
from typing import Any

import pytest

from providers.anthropic import DEFAULT_MAX_TOKENS, AnthropicMessages
from schemas.catalog import Deployment
from schemas.chat import ChatRequest
from schemas.errors import BadRequestError

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def _body(request: dict[str, Any], **deployment: Any) -> dict[str, Any]:
    req = ChatRequest.model_validate({"model": "m", **request})
    dep = Deployment(provider="anthropic", base_url="https://api.anthropic.com/v1",
                     model="claude", **deployment)
    built = AnthropicMessages().build_request(req, dep)
    body: dict[str, Any] = json.loads(built.content)
    return body


HI = [{"role": "user", "content": "hi"}]


def test_max_tokens_falls_back_to_the_deployment_then_the_default() -> None:
    assert _body({"messages": HI}, default_max_tokens=777)["max_tokens"] == 777
    assert _body({"messages": HI})["max_tokens"] == DEFAULT_MAX_TOKENS
    assert _body({"messages": HI, "max_tokens": 12}, default_max_tokens=777)["max_tokens"] == 12


def test_image_link_becomes_a_url_source() -> None:
    part = {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
    body = _body({"messages": [{"role": "user", "content": [part]}]})

    assert body["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
    ]


def test_parallel_tool_calls_false_disables_parallel_tool_use() -> None:
    body = _body({"messages": HI, "tools": TOOLS, "parallel_tool_calls": False,
                  "tool_choice": {"type": "function", "function": {"name": "f"}}})

    assert body["tool_choice"] == {"type": "tool", "name": "f", "disable_parallel_tool_use": True}


def test_user_becomes_metadata_user_id() -> None:
    assert _body({"messages": HI, "user": "u-9"})["metadata"] == {"user_id": "u-9"}


def test_temperature_above_one_follows_the_unsupported_rule() -> None:
    assert "temperature" not in _body({"messages": HI, "temperature": 1.5})
    with pytest.raises(BadRequestError, match="temperature"):
        _body({"messages": HI, "temperature": 1.5}, unsupported_params="reject")


def test_audio_parts_are_refused_not_dropped() -> None:
    part = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    with pytest.raises(BadRequestError, match="input_audio"):
        _body({"messages": [{"role": "user", "content": [part]}]})


def test_malformed_data_url_is_a_bad_request() -> None:
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@not-base64@@"}}
    with pytest.raises(BadRequestError, match="base64"):
        _body({"messages": [{"role": "user", "content": [part]}]})


def test_images_in_a_system_message_are_refused_not_dropped() -> None:
    part = {"type": "image_url", "image_url": {"url": "https://example.com/logo.png"}}
    with pytest.raises(BadRequestError, match="only text in system"):
        _body({"messages": [{"role": "system", "content": [part]}, *HI]})
