"""OpenAI Chat Completions and Embeddings, and Azure OpenAI's deployment-scoped variant.

``POST /v1/chat/completions`` (and ``/chat/completions``) with ``Authorization: Bearer``;
Azure's ``POST /openai/deployments/{deployment}/chat/completions?api-version=...`` with an
``api-key`` header (or Entra ID bearer token). Errors are ``{"error": {message, type, param,
code}}``; rate limits show in ``x-ratelimit-*-requests`` headers.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import replace
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
from mock_upstream.text import Finish, PromptCount, Reply, count_tokens

__all__ = ["AZURE", "OPENAI", "OPENAI_EMBEDDINGS", "duration"]

_FINISH = {
    Finish.STOP: "stop",
    Finish.LENGTH: "length",
    Finish.TOOL_CALL: "tool_calls",
    Finish.CONTENT_FILTER: "content_filter",
}
_INVALID_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
    "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was "
    "not valid JSON.)"
)
_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
_ERRORS = {
    ErrorKind.INVALID_REQUEST: ErrorSpec(400, "invalid_request_error", _INVALID_JSON),
    ErrorKind.CONTEXT_LENGTH: ErrorSpec(
        400, "invalid_request_error", "context length exceeded", "context_length_exceeded"
    ),
    ErrorKind.AUTHENTICATION: ErrorSpec(
        401, "invalid_request_error", "Incorrect API key provided: sk-mock.", "invalid_api_key"
    ),
    ErrorKind.PERMISSION: ErrorSpec(
        403, "invalid_request_error", "You are not allowed to use this model.", "permission_denied"
    ),
    ErrorKind.NOT_FOUND: ErrorSpec(
        404,
        "invalid_request_error",
        "The model does not exist or you do not have access to it.",
        "model_not_found",
    ),
    ErrorKind.TIMEOUT: ErrorSpec(504, "timeout", "Request timed out."),
    ErrorKind.RATE_LIMIT: ErrorSpec(
        429,
        "requests",
        "Rate limit reached for requests per min (RPM). Please try again later.",
        "rate_limit_exceeded",
    ),
    ErrorKind.SERVER: ErrorSpec(
        500,
        "server_error",
        "The server had an error while processing your request. Sorry about that!",
    ),
    ErrorKind.OVERLOADED: ErrorSpec(
        503, "server_error", "The engine is currently overloaded, please try again later."
    ),
}


def _authenticate(request: web.Request) -> None:
    if not request.headers.get("Authorization", "").startswith("Bearer "):
        raise RequestRejected(MockError(ErrorKind.AUTHENTICATION, _NO_KEY, code="invalid_api_key"))


def _azure_authenticate(request: web.Request) -> None:
    if request.headers.get("api-key") or request.headers.get("Authorization", "").startswith(
        "Bearer "
    ):
        return
    message = (
        "Access denied due to missing subscription key. Make sure to include subscription key "
        "when making requests to an API."
    )
    raise RequestRejected(MockError(ErrorKind.AUTHENTICATION, message, code="401"))


def _content_text(content: Any, prompt: PromptCount) -> str:
    """Count a message's content (a string or a list of parts) and return its text."""
    if isinstance(content, str):
        prompt.text(content)
        return content
    texts: list[str] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            text = str(part.get("text", ""))
            prompt.text(text)
            texts.append(text)
        elif part.get("type") == "image_url":
            prompt.image()
    return " ".join(texts)


def _first_tool(body: JSON) -> str | None:
    for tool in body.get("tools") or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("name"):
            return str(function["name"])
    for function in body.get("functions") or ():
        if isinstance(function, dict) and function.get("name"):
            return str(function["name"])
    return None


def _parse_chat_body(body: JSON, model: str) -> ParsedRequest:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise RequestRejected(
            MockError(
                ErrorKind.INVALID_REQUEST,
                "Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            ),
            model,
        )
    if not messages:
        raise invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            model,
            param="messages",
        )
    prompt = PromptCount()
    for message in messages:
        if not isinstance(message, dict):
            raise invalid("Invalid 'messages': each message must be an object.", model)
        prompt.message()
        text = _content_text(message.get("content"), prompt)
        if message.get("role") == "user":
            prompt.last_user_text = text
    max_tokens = optional_count(body, "max_completion_tokens", model)
    if max_tokens is None:
        max_tokens = optional_count(body, "max_tokens", model)
    return ParsedRequest(model, prompt, max_tokens, _first_tool(body))


def _body_model(body: JSON) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("you must provide a model parameter")
    return model


def _parse_chat(body: JSON, request: web.Request) -> ParsedRequest:
    return _parse_chat_body(body, _body_model(body))


def _parse_azure(body: JSON, request: web.Request) -> ParsedRequest:
    deployment = request.match_info["deployment"]
    if "api-version" not in request.query:
        error = MockError(ErrorKind.NOT_FOUND, "Resource not found", code="404")
        raise RequestRejected(error, deployment)
    return _parse_chat_body(body, deployment)


def _parse_embeddings(body: JSON, request: web.Request) -> ParsedRequest:
    model = request.match_info.get("deployment") or _body_model(body)
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise invalid(
            "'input' must be a non-empty string or array of strings.", model, param="input"
        )
    prompt = PromptCount(last_user_text=inputs[-1])
    for text in inputs:
        prompt.text(text)
    return ParsedRequest(model, prompt, None, inputs=tuple(inputs))


def _usage(prompt_tokens: int, completion_tokens: int) -> JSON:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def _message(reply: Reply) -> JSON:
    if reply.tool_name is not None:
        call = {
            "id": new_id("call_"),
            "type": "function",
            "function": {"name": reply.tool_name, "arguments": "{}"},
        }
        return {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}
    content = None if reply.finish is Finish.CONTENT_FILTER else reply.text
    return {"role": "assistant", "content": content, "refusal": None}


def _render_chat(parsed: ParsedRequest, reply: Reply) -> JSON:
    choice = {
        "index": 0,
        "message": _message(reply),
        "finish_reason": _FINISH[reply.finish],
        "logprobs": None,
    }
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": parsed.model,
        "choices": [choice],
        "usage": _usage(parsed.prompt.tokens, reply.completion_tokens),
        "system_fingerprint": "fp_mock",
    }


def _vector(text: str) -> list[float]:
    """Eight floats in [-1, 1] from a hash of ``text``: the same text, the same vector."""
    digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
    return [round(int.from_bytes(digest[i : i + 2]) / 32767.5 - 1.0, 6) for i in range(0, 16, 2)]


def _render_embeddings(parsed: ParsedRequest, reply: Reply) -> JSON:
    data = [
        {"object": "embedding", "index": index, "embedding": _vector(text)}
        for index, text in enumerate(parsed.inputs)
    ]
    tokens = sum(count_tokens(text) for text in parsed.inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data, "model": parsed.model, "usage": usage}


def _render_error(spec: ErrorSpec, error: MockError, status: int) -> tuple[JSON, Mapping[str, str]]:
    body = {
        "message": error.message or spec.message,
        "type": spec.type,
        "param": error.param,
        "code": error.code or spec.code,
    }
    return {"error": body}, {}


def duration(seconds: float) -> str:
    """OpenAI's reset duration spelling: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(round(seconds, 3), 60)
    return f"{int(minutes)}m{rest:g}s" if minutes else f"{rest:g}s"


def _rate_limit_headers(info: RateInfo) -> Mapping[str, str]:
    return {
        "x-ratelimit-limit-requests": str(info.limit),
        "x-ratelimit-remaining-requests": str(info.remaining),
        "x-ratelimit-reset-requests": duration(info.reset_seconds),
    }


OPENAI = WireFormat(
    kind="openai",
    authenticate=_authenticate,
    parse=_parse_chat,
    render_success=_render_chat,
    render_error=_render_error,
    rate_limit_headers=_rate_limit_headers,
    errors=_ERRORS,
    context_message=(
        "This model's maximum context length is {limit} tokens. However, your messages resulted "
        "in {tokens} tokens. Please reduce the length of the messages."
    ),
    context_window=128_000,
    request_id_header="x-request-id",
)
AZURE = replace(OPENAI, kind="azure", authenticate=_azure_authenticate, parse=_parse_azure)
OPENAI_EMBEDDINGS = replace(OPENAI, parse=_parse_embeddings, render_success=_render_embeddings)
