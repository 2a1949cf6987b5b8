"""Google Gemini ``POST /v1beta/models/{model}:generateContent`` (also ``/v1/...``).

The key comes in an ``x-goog-api-key`` header or a ``?key=`` parameter. Requests carry
``contents`` (roles "user"/"model", parts), ``systemInstruction`` and ``generationConfig``.
Errors are Google RPC statuses: ``{"error": {code, message, status}}``. Gemini sends no
rate-limit headers.
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

__all__ = ["GEMINI"]

_FINISH = {
    Finish.STOP: "STOP",
    Finish.LENGTH: "MAX_TOKENS",
    Finish.TOOL_CALL: "STOP",
    Finish.CONTENT_FILTER: "SAFETY",
}
_CATEGORIES = (
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
)
_SAFE = [{"category": category, "probability": "NEGLIGIBLE"} for category in _CATEGORIES]
_BLOCKED = [
    {"category": category, "probability": "HIGH", "blocked": True}
    if category == "HARM_CATEGORY_DANGEROUS_CONTENT"
    else {"category": category, "probability": "NEGLIGIBLE"}
    for category in _CATEGORIES
]
_UNREGISTERED = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
_ERRORS = {
    ErrorKind.INVALID_REQUEST: ErrorSpec(
        400, "INVALID_ARGUMENT", "Invalid JSON payload received. Unexpected token."
    ),
    ErrorKind.CONTEXT_LENGTH: ErrorSpec(400, "INVALID_ARGUMENT", "The input is too long."),
    ErrorKind.AUTHENTICATION: ErrorSpec(
        401, "UNAUTHENTICATED", "Request had invalid authentication credentials."
    ),
    ErrorKind.PERMISSION: ErrorSpec(403, "PERMISSION_DENIED", _UNREGISTERED),
    ErrorKind.NOT_FOUND: ErrorSpec(
        404, "NOT_FOUND", "The model is not found, or is not supported for generateContent."
    ),
    ErrorKind.TIMEOUT: ErrorSpec(
        504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."
    ),
    ErrorKind.RATE_LIMIT: ErrorSpec(
        429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."
    ),
    ErrorKind.SERVER: ErrorSpec(
        500, "INTERNAL", "An internal error has occurred. Please retry or report the problem."
    ),
    ErrorKind.OVERLOADED: ErrorSpec(
        503, "UNAVAILABLE", "The model is overloaded. Please try again later."
    ),
}


def _authenticate(request: web.Request) -> None:
    if not (request.headers.get("x-goog-api-key") or request.query.get("key")):
        raise RequestRejected(MockError(ErrorKind.PERMISSION))


def _parts_text(parts: Any, prompt: PromptCount) -> str:
    """Count a content's parts and return the text of its text parts."""
    texts: list[str] = []
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict):
            continue
        if "text" in part:
            text = str(part["text"])
            prompt.text(text)
            texts.append(text)
        elif "inlineData" in part or "fileData" in part:
            prompt.image()
        elif "functionCall" in part or "functionResponse" in part:
            prompt.text(json.dumps(part))
    return " ".join(texts)


def _first_tool(body: JSON) -> str | None:
    for tool in body.get("tools") or ():
        for declaration in tool.get("functionDeclarations") or () if isinstance(tool, dict) else ():
            if isinstance(declaration, dict) and declaration.get("name"):
                return str(declaration["name"])
    return None


def _parse(body: JSON, request: web.Request) -> ParsedRequest:
    model = request.match_info["model"]
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise invalid("* GenerateContentRequest.contents: contents is not specified\n", model)
    prompt = PromptCount()
    system = body.get("systemInstruction")
    if isinstance(system, dict):
        prompt.message()
        _parts_text(system.get("parts"), prompt)
    for content in contents:
        if not isinstance(content, dict) or content.get("role", "user") not in ("user", "model"):
            raise invalid("Please use a valid role: user, model.", model)
        prompt.message()
        text = _parts_text(content.get("parts"), prompt)
        if content.get("role", "user") == "user":
            prompt.last_user_text = text
    config = body.get("generationConfig")
    max_tokens = (
        optional_count(config, "maxOutputTokens", model) if isinstance(config, dict) else None
    )
    return ParsedRequest(model, prompt, max_tokens, _first_tool(body))


def _candidate(reply: Reply) -> JSON:
    if reply.finish is Finish.CONTENT_FILTER:
        return {"finishReason": "SAFETY", "index": 0, "safetyRatings": _BLOCKED}
    if reply.tool_name is not None:
        parts: list[JSON] = [{"functionCall": {"name": reply.tool_name, "args": {}}}]
    else:
        parts = [{"text": reply.text}]
    return {
        "content": {"role": "model", "parts": parts},
        "finishReason": _FINISH[reply.finish],
        "index": 0,
        "safetyRatings": _SAFE,
    }


def _render_success(parsed: ParsedRequest, reply: Reply) -> JSON:
    prompt_tokens = parsed.prompt.tokens
    body: JSON = {
        "candidates": [_candidate(reply)],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": reply.completion_tokens,
            "totalTokenCount": prompt_tokens + reply.completion_tokens,
            "cachedContentTokenCount": 0,
        },
        "modelVersion": parsed.model,
        "responseId": new_id(""),
    }
    if reply.finish is Finish.CONTENT_FILTER:
        body["promptFeedback"] = {"safetyRatings": _SAFE}
    return body


def _render_error(spec: ErrorSpec, error: MockError, status: int) -> tuple[JSON, Mapping[str, str]]:
    detail = {"code": status, "message": error.message or spec.message, "status": spec.type}
    return {"error": detail}, {}


def _rate_limit_headers(info: RateInfo) -> Mapping[str, str]:
    return {}


GEMINI = WireFormat(
    kind="gemini",
    authenticate=_authenticate,
    parse=_parse,
    render_success=_render_success,
    render_error=_render_error,
    rate_limit_headers=_rate_limit_headers,
    errors=_ERRORS,
    context_message=(
        "The input token count ({tokens}) exceeds the maximum number of tokens allowed ({limit})."
    ),
    context_window=1_048_576,
)
