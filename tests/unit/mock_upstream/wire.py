"""How a test client speaks each wire format: build a request, read a response.

Written from the providers' documentation, independently of ``mock_upstream.formats``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

JSON = dict[str, Any]
SYSTEM = "Be brief."
SIGV4 = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/bedrock/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=0123abcd"
)


@dataclass(frozen=True)
class Wire:
    name: str
    path: Callable[[str], str]
    headers: dict[str, str]
    body: Callable[[str, str, int | None, str | None], JSON]
    text: Callable[[JSON], str | None]
    finish: Callable[[JSON], str]
    usage: Callable[[JSON], tuple[int, int]]
    tool_call: Callable[[JSON], tuple[str, Any]]
    error_type: Callable[[httpx.Response], str]
    model: str = "test-model"

    def post(
        self,
        client: httpx.Client,
        text: str,
        *,
        max_tokens: int | None = None,
        tool: str | None = None,
        model: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        model = model or self.model
        body = self.body(model, text, max_tokens, tool)
        return client.post(self.path(model), json=body, headers={**self.headers, **(headers or {})})


def _openai_body(model: str, text: str, max_tokens: int | None, tool: str | None) -> JSON:
    body: JSON = {
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
    }
    if max_tokens is not None:
        body["max_completion_tokens"] = max_tokens
    if tool:
        body["tools"] = [{"type": "function", "function": {"name": tool, "parameters": {}}}]
    return body


def _openai_tool(body: JSON) -> tuple[str, Any]:
    call = body["choices"][0]["message"]["tool_calls"][0]
    assert call["type"] == "function"
    return call["function"]["name"], json.loads(call["function"]["arguments"])


def _openai_usage(body: JSON) -> tuple[int, int]:
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    return usage["prompt_tokens"], usage["completion_tokens"]


_OPENAI_READERS: JSON = {
    "text": lambda b: b["choices"][0]["message"]["content"],
    "finish": lambda b: b["choices"][0]["finish_reason"],
    "usage": _openai_usage,
    "tool_call": _openai_tool,
    "error_type": lambda r: r.json()["error"]["type"],
}

OPENAI = Wire(
    name="openai",
    path=lambda model: "/v1/chat/completions",
    headers={"Authorization": "Bearer sk-test"},
    body=_openai_body,
    **_OPENAI_READERS,
)


def _azure_body(model: str, text: str, max_tokens: int | None, tool: str | None) -> JSON:
    body = _openai_body(model, text, max_tokens, tool)
    del body["model"]
    return body


AZURE = Wire(
    name="azure",
    path=lambda model: f"/openai/deployments/{model}/chat/completions?api-version=2024-10-21",
    headers={"api-key": "azure-key"},
    body=_azure_body,
    **_OPENAI_READERS,
)


def _anthropic_body(model: str, text: str, max_tokens: int | None, tool: str | None) -> JSON:
    body: JSON = {
        "model": model,
        "max_tokens": 1024 if max_tokens is None else max_tokens,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": text}],
    }
    if tool:
        body["tools"] = [{"name": tool, "input_schema": {"type": "object"}}]
    return body


def _anthropic_text(body: JSON) -> str | None:
    texts = [block["text"] for block in body["content"] if block["type"] == "text"]
    return texts[0] if texts else None


def _anthropic_tool(body: JSON) -> tuple[str, Any]:
    block = body["content"][0]
    assert block["type"] == "tool_use"
    assert block["id"].startswith("toolu_")
    return block["name"], block["input"]


def _anthropic_error(response: httpx.Response) -> str:
    body = response.json()
    assert body["type"] == "error"
    return str(body["error"]["type"])


ANTHROPIC = Wire(
    name="anthropic",
    path=lambda model: "/v1/messages",
    headers={"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"},
    body=_anthropic_body,
    text=_anthropic_text,
    finish=lambda b: b["stop_reason"],
    usage=lambda b: (b["usage"]["input_tokens"], b["usage"]["output_tokens"]),
    tool_call=_anthropic_tool,
    error_type=_anthropic_error,
)


def _gemini_body(model: str, text: str, max_tokens: int | None, tool: str | None) -> JSON:
    body: JSON = {
        "systemInstruction": {"parts": [{"text": SYSTEM}]},
        "contents": [{"role": "user", "parts": [{"text": text}]}],
    }
    if max_tokens is not None:
        body["generationConfig"] = {"maxOutputTokens": max_tokens, "temperature": 0.2}
    if tool:
        body["tools"] = [{"functionDeclarations": [{"name": tool}]}]
    return body


def _gemini_text(body: JSON) -> str | None:
    content = body["candidates"][0].get("content")
    return content["parts"][0].get("text") if content else None


def _gemini_usage(body: JSON) -> tuple[int, int]:
    usage = body["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    return usage["promptTokenCount"], usage["candidatesTokenCount"]


def _gemini_tool(body: JSON) -> tuple[str, Any]:
    call = body["candidates"][0]["content"]["parts"][0]["functionCall"]
    return call["name"], call["args"]


def _gemini_error(response: httpx.Response) -> str:
    error = response.json()["error"]
    assert error["code"] == response.status_code
    return str(error["status"])


GEMINI = Wire(
    name="gemini",
    path=lambda model: f"/v1beta/models/{model}:generateContent",
    headers={"x-goog-api-key": "goog-test"},
    body=_gemini_body,
    text=_gemini_text,
    finish=lambda b: b["candidates"][0]["finishReason"],
    usage=_gemini_usage,
    tool_call=_gemini_tool,
    error_type=_gemini_error,
)


def _bedrock_body(model: str, text: str, max_tokens: int | None, tool: str | None) -> JSON:
    body: JSON = {
        "system": [{"text": SYSTEM}],
        "messages": [{"role": "user", "content": [{"text": text}]}],
    }
    if max_tokens is not None:
        body["inferenceConfig"] = {"maxTokens": max_tokens, "temperature": 0.2}
    if tool:
        spec = {"name": tool, "inputSchema": {"json": {"type": "object"}}}
        body["toolConfig"] = {"tools": [{"toolSpec": spec}]}
    return body


def _bedrock_text(body: JSON) -> str | None:
    content = body["output"]["message"]["content"]
    return content[0].get("text") if content else None


def _bedrock_usage(body: JSON) -> tuple[int, int]:
    usage = body["usage"]
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    return usage["inputTokens"], usage["outputTokens"]


def _bedrock_tool(body: JSON) -> tuple[str, Any]:
    tool_use = body["output"]["message"]["content"][0]["toolUse"]
    assert tool_use["toolUseId"]
    return tool_use["name"], tool_use["input"]


def _bedrock_error(response: httpx.Response) -> str:
    assert set(response.json()) == {"message"}
    return response.headers["x-amzn-ErrorType"]


BEDROCK = Wire(
    name="bedrock",
    path=lambda model: f"/model/{quote(model, safe='')}/converse",
    headers={"Authorization": SIGV4},
    body=_bedrock_body,
    text=_bedrock_text,
    finish=lambda b: b["stopReason"],
    usage=_bedrock_usage,
    tool_call=_bedrock_tool,
    error_type=_bedrock_error,
    model="anthropic.claude-3-5-haiku-20241022-v1:0",
)

WIRES = (OPENAI, AZURE, ANTHROPIC, GEMINI, BEDROCK)
