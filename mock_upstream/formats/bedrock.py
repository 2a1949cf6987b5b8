"""AWS Bedrock Converse: ``POST /model/{modelId}/converse``.

Needs an ``Authorization`` header: a SigV4 one (``AWS4-HMAC-SHA256 ...``, not verified) or a
Bedrock API key (``Bearer ...``). Errors are ``{"message": ...}`` with the exception's name in
``x-amzn-ErrorType``. Bedrock sends no rate-limit headers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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

__all__ = ["BEDROCK"]

_STOP = {
    Finish.STOP: "end_turn",
    Finish.LENGTH: "max_tokens",
    Finish.TOOL_CALL: "tool_use",
    Finish.CONTENT_FILTER: "content_filtered",
}
_ERRORS = {
    ErrorKind.INVALID_REQUEST: ErrorSpec(
        400,
        "ValidationException",
        "Malformed input request, please reformat your input and try again.",
    ),
    ErrorKind.CONTEXT_LENGTH: ErrorSpec(400, "ValidationException", "Input is too long."),
    ErrorKind.AUTHENTICATION: ErrorSpec(
        403,
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    ),
    ErrorKind.PERMISSION: ErrorSpec(
        403,
        "AccessDeniedException",
        "You don't have access to the model with the specified model ID.",
    ),
    ErrorKind.NOT_FOUND: ErrorSpec(
        404,
        "ResourceNotFoundException",
        "Could not resolve the foundation model from the provided model identifier.",
    ),
    ErrorKind.TIMEOUT: ErrorSpec(
        408,
        "ModelTimeoutException",
        "Model has timed out in processing the request. Try your request again.",
    ),
    ErrorKind.RATE_LIMIT: ErrorSpec(
        429, "ThrottlingException", "Too many requests, please wait before trying again."
    ),
    ErrorKind.SERVER: ErrorSpec(
        500,
        "InternalServerException",
        "The server encountered an internal error while processing the request.",
    ),
    ErrorKind.OVERLOADED: ErrorSpec(
        503, "ServiceUnavailableException", "The service is unavailable. Please try again later."
    ),
}
_AUTH_SCHEMES = ("AWS4-HMAC-SHA256", "Bearer ")


def _authenticate(request: web.Request) -> None:
    if not request.headers.get("Authorization", "").startswith(_AUTH_SCHEMES):
        error = MockError(
            ErrorKind.AUTHENTICATION,
            "Missing Authentication Token",
            code="MissingAuthenticationTokenException",
        )
        raise RequestRejected(error)


def _block_text(block: Any, prompt: PromptCount) -> str:
    """Count one content block; return its text if it is a text block."""
    if not isinstance(block, dict):
        return ""
    if "text" in block:
        text = str(block["text"])
        prompt.text(text)
        return text
    if "image" in block or "document" in block:
        prompt.image()
    elif "toolUse" in block or "toolResult" in block:
        prompt.text(json.dumps(block))
    return ""


def _content_text(blocks: Any, prompt: PromptCount) -> str:
    blocks = blocks if isinstance(blocks, list) else ()
    return " ".join(text for block in blocks if (text := _block_text(block, prompt)))


def _first_tool(body: JSON) -> str | None:
    config = body.get("toolConfig")
    for tool in config.get("tools") or () if isinstance(config, dict) else ():
        spec = tool.get("toolSpec") if isinstance(tool, dict) else None
        if isinstance(spec, dict) and spec.get("name"):
            return str(spec["name"])
    return None


def _parse(body: JSON, request: web.Request) -> ParsedRequest:
    model = request.match_info["model_id"]
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid(
            "1 validation error detected: Value at 'messages' failed to satisfy constraint: "
            "Member must have length greater than or equal to 1",
            model,
        )
    prompt = PromptCount()
    if body.get("system"):
        prompt.message()
        _content_text(body["system"], prompt)
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise invalid("A conversation must alternate between user and assistant roles.", model)
        prompt.message()
        text = _content_text(message.get("content"), prompt)
        if message["role"] == "user":
            prompt.last_user_text = text
    config = body.get("inferenceConfig")
    max_tokens = optional_count(config, "maxTokens", model) if isinstance(config, dict) else None
    return ParsedRequest(model, prompt, max_tokens, _first_tool(body))


def _content(reply: Reply) -> list[JSON]:
    if reply.tool_name is not None:
        tool_use = {"toolUseId": new_id("tooluse_"), "name": reply.tool_name, "input": {}}
        return [{"toolUse": tool_use}]
    if reply.finish is Finish.CONTENT_FILTER:
        return []
    return [{"text": reply.text}]


def _render_success(parsed: ParsedRequest, reply: Reply) -> JSON:
    prompt_tokens = parsed.prompt.tokens
    return {
        "output": {"message": {"role": "assistant", "content": _content(reply)}},
        "stopReason": _STOP[reply.finish],
        "usage": {
            "inputTokens": prompt_tokens,
            "outputTokens": reply.completion_tokens,
            "totalTokens": prompt_tokens + reply.completion_tokens,
            "cacheReadInputTokens": 0,
            "cacheWriteInputTokens": 0,
        },
        "metrics": {"latencyMs": reply.latency_ms},
    }


def _render_error(spec: ErrorSpec, error: MockError, status: int) -> tuple[JSON, Mapping[str, str]]:
    body = {"message": error.message or spec.message}
    return body, {"x-amzn-ErrorType": error.code or spec.type}


def _rate_limit_headers(info: RateInfo) -> Mapping[str, str]:
    return {}


BEDROCK = WireFormat(
    kind="bedrock",
    authenticate=_authenticate,
    parse=_parse,
    render_success=_render_success,
    render_error=_render_error,
    rate_limit_headers=_rate_limit_headers,
    errors=_ERRORS,
    context_message="Input is too long for requested model.",
    context_window=200_000,
    request_id_header="x-amzn-RequestId",
    request_id_prefix="",
)
