"""Gemini specifics beyond the contract: image links, tool results, JSON mode."""

from __future__ import annotations

import json
from typing import Any

import pytest

from providers.gemini import GeminiGenerateContent
from schemas.catalog import Deployment
from schemas.chat import ChatRequest
from schemas.errors import BadRequestError


def _body(request: dict[str, Any]) -> dict[str, Any]:
    req = ChatRequest.model_validate({"model": "m", **request})
    dep = Deployment(provider="gemini", base_url="https://generativelanguage.googleapis.com/v1beta",
                     model="gemini-2.0-flash", api_key="k")
    body: dict[str, Any] = json.loads(GeminiGenerateContent().build_request(req, dep).content)
    return body


def test_image_link_becomes_file_data_with_its_type() -> None:
    part = {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
    body = _body({"messages": [{"role": "user", "content": [part]}]})

    assert body["contents"][0]["parts"] == [
        {"fileData": {"fileUri": "https://example.com/cat.jpg", "mimeType": "image/jpeg"}}
    ]


def test_json_object_mode_asks_for_json_without_schema() -> None:
    body = _body({"messages": [{"role": "user", "content": "x"}],
                  "response_format": {"type": "json_object"}})

    assert body["generationConfig"] == {"responseMimeType": "application/json"}


def test_tool_result_for_an_unknown_call_is_a_bad_request() -> None:
    messages = [{"role": "user", "content": "x"},
                {"role": "tool", "tool_call_id": "call_404", "content": "42"}]
    with pytest.raises(BadRequestError, match="call_404"):
        _body({"messages": messages})


def test_named_tool_choice_restricts_allowed_functions() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    body = _body({"messages": [{"role": "user", "content": "x"}], "tools": tools,
                  "tool_choice": {"type": "function", "function": {"name": "f"}}})

    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}
    }
