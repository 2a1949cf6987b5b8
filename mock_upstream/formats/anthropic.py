"""Anthropic's Messages API: ``POST /v1/messages`` (also ``/messages``).

Needs ``x-api-key`` and ``anthropic-version`` headers and a ``max_tokens`` field; ``system`` is a
top-level field. Errors are ``{"type": "error", "error": {type, message}}``; overloaded is 529;
rate limits show in ``anthropic-ratelimit-requests-*`` headers (reset as an RFC 3339 time).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from mock_upstream.formats.base import (
    JSON,
    ErrorKind,
    ErrorSpec,
    MockError,
    ParsedRequest,
    RateInfo,
    RequestRejected,
    WireFormat,
    invalid,
    new_id,
    optional_count,
)
from mock_upstream.text import Finish, PromptCount, Reply

__all__ = ["ANTHROPIC"]

_STOP = {
    Finish.STOP: "end_turn",
    Finish.LENGTH: "max_tokens",
    Finish.TOOL_CALL: "tool_use",
    Finish.CONTENT_FILTER: "refusal",
}
_ERRORS = {
    ErrorKind.INVALID_REQUEST: ErrorSpec(
        400, "invalid_request_error", "There was an error parsing the body as JSON."
    ),
    ErrorKind.CONTEXT_LENGTH: ErrorSpec(400, "invalid_request_error", "prompt is too long"),
    ErrorKind.AUTHENTICATION: ErrorSpec(401, "authentication_error", "invalid x-api-key"),
    ErrorKind.PERMISSION: ErrorSpec(
        403,
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    ErrorKind.NOT_FOUND: ErrorSpec(404, "not_found_error", "The requested model was not found."),
    ErrorKind.TIMEOUT: ErrorSpec(504, "timeout_error", "Request timed out."),
    ErrorKind.RATE_LIMIT: ErrorSpec(
        429,
        "rate_limit_error",
        "This request would exceed the rate limit for your organization's requests per minute.",
    ),
    ErrorKind.SERVER: ErrorSpec(500, "api_error", "Internal server error"),
    ErrorKind.OVERLOADED: ErrorSpec(529, "overloaded_error", "Overloaded"),
}


def _authenticate(request: web.Request) -> None:
    if not request.headers.get("x-api-key"):
        error = MockError(ErrorKind.AUTHENTICATION, "x-api-key header is required")
        raise RequestRejected(error)
    if not request.headers.get("anthropic-version"):
        raise invalid("anthropic-version: header is required")


def _block_text(block: Any, prompt: PromptCount) -> str:
    """Count one content block; return its text if it is a text block."""
    if not isinstance(block, dict):
        return ""
    kind = block.get("type")
    if kind == "text":
        text = str(block.get("text", ""))
        prompt.text(text)
        return text
    if kind in ("image", "document"):
        prompt.image()
    elif kind == "tool_use":
        prompt.text(json.dumps(block.get("input", {})))
    elif kind == "tool_result":
        _content_text(block.get("content", ""), prompt)
    return ""


def _content_text(content: Any, prompt: PromptCount) -> str:
    if isinstance(content, str):
        prompt.text(content)
        return content
    blocks = content if isinstance(content, list) else ()
    return " ".join(text for block in blocks if (text := _block_text(block, prompt)))


def _first_tool(body: JSON) -> str | None:
    for tool in body.get("tools") or ():
        if isinstance(tool, dict) and tool.get("name"):
            return str(tool["name"])
    return None


def _parse(body: JSON, request: web.Request) -> ParsedRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model: Field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages: Field required", model)
    max_tokens = optional_count(body, "max_tokens", model)
    if max_tokens is None:
        raise invalid("max_tokens: Field required", model)
    prompt = PromptCount()
    if body.get("system"):
        prompt.message()
        _content_text(body["system"], prompt)
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise invalid("messages: each message needs a role of 'user' or 'assistant'", model)
        prompt.message()
        text = _content_text(message.get("content", ""), prompt)
        if message["role"] == "user":
            prompt.last_user_text = text
    return ParsedRequest(model, prompt, max_tokens, _first_tool(body))


def _content(reply: Reply) -> list[JSON]:
    if reply.tool_name is not None:
        return [{"type": "tool_use", "id": new_id("toolu_"), "name": reply.tool_name, "input": {}}]
    if reply.finish is Finish.CONTENT_FILTER:
        return []
    return [{"type": "text", "text": reply.text}]


def _render_success(parsed: ParsedRequest, reply: Reply) -> JSON:
    usage = {
        "input_tokens": parsed.prompt.tokens,
        "output_tokens": reply.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard",
    }
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": parsed.model,
        "content": _content(reply),
        "stop_reason": _STOP[reply.finish],
        "stop_sequence": None,
        "usage": usage,
    }


def _render_error(spec: ErrorSpec, error: MockError, status: int) -> tuple[JSON, Mapping[str, str]]:
    detail = {"type": spec.type, "message": error.message or spec.message}
    return {"type": "error", "error": detail}, {}


def _rate_limit_headers(info: RateInfo) -> Mapping[str, str]:
    reset = datetime.fromtimestamp(time.time() + info.reset_seconds, UTC)
    return {
        "anthropic-ratelimit-requests-limit": str(info.limit),
        "anthropic-ratelimit-requests-remaining": str(info.remaining),
        "anthropic-ratelimit-requests-reset": reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


ANTHROPIC = WireFormat(
    kind="anthropic",
    authenticate=_authenticate,
    parse=_parse,
    render_success=_render_success,
    render_error=_render_error,
    rate_limit_headers=_rate_limit_headers,
    errors=_ERRORS,
    context_message="prompt is too long: {tokens} tokens > {limit} maximum",
    context_window=200_000,
    request_id_header="request-id",
)
