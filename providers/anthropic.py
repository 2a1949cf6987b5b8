"""Anthropic's Messages API (``POST {base_url}/messages``, base_url like
https://api.anthropic.com/v1).

System and developer messages are lifted into the top-level ``system``; ``max_tokens`` is
required (the request's, else the deployment's ``default_max_tokens``, else 4096); tool calls and
tool results become ``tool_use`` / ``tool_result`` blocks. Anthropic has no JSON output mode, no
seed, logprobs or penalties: those follow the deployment's ``unsupported_params``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from providers.completion import Completion, created_at, finish_reason, openai_tool_call, read_json
from providers.errors import error_for_status, upstream_error
from providers.params import ParamSupport, above
from providers.translate import (
    function_tools,
    image_of,
    merge_turns,
    parsed_tool_calls,
    plain_text,
    stop_list,
    system_texts,
    tool_choice,
    unsupported_part,
)
from schemas.catalog import Deployment
from schemas.chat import ChatMessage, ChatRequest, ChatResult, Usage
from schemas.errors import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    MalformedResponseError,
    OverloadedError,
    RateLimitedError,
    ServerError,
    UpstreamError,
    UpstreamTimeoutError,
)

__all__ = ["ANTHROPIC_VERSION", "DEFAULT_MAX_TOKENS", "AnthropicMessages"]

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
"""Used when neither the request nor the deployment's ``default_max_tokens`` sets a limit."""

PARAMS = ParamSupport(
    supported=frozenset({
        "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "tools",
        "tool_choice", "parallel_tool_calls", "user",
    }),
    unsupported=frozenset({
        "n", "seed", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
        "top_logprobs", "response_format", "reasoning_effort",
    }),
    value_rules={"temperature": above(1.0)},
)

_ERRORS: dict[str, type[UpstreamError]] = {
    "invalid_request_error": BadRequestError,
    "not_found_error": BadRequestError,
    "request_too_large": BadRequestError,
    "authentication_error": AuthenticationError,
    "permission_error": AuthenticationError,
    "billing_error": AuthenticationError,
    "rate_limit_error": RateLimitedError,
    "overloaded_error": OverloadedError,
    "api_error": ServerError,
    "timeout_error": UpstreamTimeoutError,
}
_CONTEXT_HINTS = ("prompt is too long", "exceed context limit", "context window")


class AnthropicMessages:
    """The Anthropic Messages wire format."""

    name = "anthropic"
    params = PARAMS

    def build_request(self, req: ChatRequest, deployment: Deployment) -> httpx.Request:
        req = PARAMS.apply(req, deployment, self.name)
        body = self._body(req, deployment)
        headers = {
            "content-type": "application/json",
            "anthropic-version": ANTHROPIC_VERSION,
            **deployment.headers,
        }
        if deployment.api_key is not None:
            headers["x-api-key"] = deployment.api_key.get_secret_value()
        url = deployment.base_url.rstrip("/") + "/messages"
        return httpx.Request("POST", url, headers=headers, content=json.dumps(body))

    def _body(self, req: ChatRequest, deployment: Deployment) -> dict[str, Any]:
        system = system_texts(req.messages, self.name)
        limit = req.output_limit() or deployment.default_max_tokens or DEFAULT_MAX_TOKENS
        body: dict[str, Any] = {"model": deployment.model, "max_tokens": limit}
        if system:
            body["system"] = "\n\n".join(system)
        body["messages"] = self._messages(req.messages)
        optional = {
            "temperature": req.temperature,
            "top_p": req.top_p,
            "stop_sequences": stop_list(req.stop),
            "metadata": {"user_id": req.user} if req.user else None,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        body.update(self._tools(req))
        return body

    def _messages(self, messages: list[ChatMessage]) -> list[dict[str, Any]]:
        turns: list[tuple[str, list[dict[str, Any]]]] = []
        for m in messages:
            if m.role in ("system", "developer"):
                continue
            if m.role == "tool":
                block = {"type": "tool_result", "tool_use_id": m.tool_call_id or "",
                         "content": plain_text(m, self.name)}
                turns.append(("user", [block]))
            elif m.role == "assistant":
                turns.append(("assistant", self._assistant_blocks(m)))
            elif m.role == "user":
                turns.append(("user", self._content_blocks(m)))
            else:
                raise BadRequestError(f"{self.name} does not accept role {m.role!r}; use 'tool'",
                                      provider=self.name)
        return merge_turns(turns, "content")

    def _content_blocks(self, m: ChatMessage) -> list[dict[str, Any]]:
        if isinstance(m.content, str) or m.content is None:
            return [{"type": "text", "text": m.content}] if m.content else []
        blocks: list[dict[str, Any]] = []
        for part in m.content:
            if part.type == "text":
                if part.text:
                    blocks.append({"type": "text", "text": part.text})
            elif part.type == "image_url":
                image = image_of(part, self.name)
                source = (
                    {"type": "base64", "media_type": image.media_type, "data": image.data}
                    if image.data is not None
                    else {"type": "url", "url": image.url}
                )
                blocks.append({"type": "image", "source": source})
            else:
                raise unsupported_part(part, self.name)
        return blocks

    def _assistant_blocks(self, m: ChatMessage) -> list[dict[str, Any]]:
        blocks = self._content_blocks(m)
        for call in parsed_tool_calls(m, self.name):
            blocks.append({"type": "tool_use", "id": call.id, "name": call.name,
                           "input": call.arguments})
        return blocks

    def _tools(self, req: ChatRequest) -> dict[str, Any]:
        tools = function_tools(req.tools, self.name)
        if not tools:
            return {}
        out: dict[str, Any] = {"tools": [
            {"name": t.name, **({"description": t.description} if t.description else {}),
             "input_schema": t.parameters}
            for t in tools
        ]}
        choice = tool_choice(req.tool_choice, self.name)
        wire: dict[str, Any] = {"type": "auto"}
        if choice is not None:
            kinds = {"auto": "auto", "none": "none", "required": "any", "function": "tool"}
            wire = {"type": kinds[choice.mode]}
            if choice.name:
                wire["name"] = choice.name
        if req.parallel_tool_calls is False and wire["type"] != "none":
            wire["disable_parallel_tool_use"] = True
        if choice is not None or "disable_parallel_tool_use" in wire:
            out["tool_choice"] = wire
        return out

    def parse_response(self, resp: httpx.Response) -> ChatResult:
        body = read_json(resp, self.name)
        if resp.status_code >= 400 or body.get("type") == "error":
            raise self._error(resp, body)
        content = body.get("content")
        if not isinstance(content, list):
            raise MalformedResponseError("response has no content", provider=self.name,
                                         status=resp.status_code)
        texts = [b.get("text") or "" for b in content if b.get("type") == "text"]
        calls = [openai_tool_call(str(b.get("id")), str(b.get("name")), b.get("input") or {})
                 for b in content if b.get("type") == "tool_use"]
        usage = _usage(body.get("usage") or {})
        completion = Completion(
            id=str(body.get("id", "")),
            model=str(body.get("model", "")),
            created=created_at(resp),
            text="".join(texts) if texts else None,
            tool_calls=calls,
            finish_reason=finish_reason(body.get("stop_reason"), has_tool_calls=bool(calls)),
            usage=usage,
        )
        return ChatResult(body=completion.body(), usage=usage,
                          request_id=resp.headers.get("request-id", "") or completion.id,
                          status_code=resp.status_code)

    def _error(self, resp: httpx.Response, body: dict[str, Any]) -> UpstreamError:
        err = body.get("error")
        err = err if isinstance(err, dict) else {}
        message = str(err.get("message") or resp.reason_phrase or "upstream error")
        if resp.status_code < 400:
            resp = httpx.Response(500, headers=resp.headers)  # an error body in a 200
        if any(hint in message.lower() for hint in _CONTEXT_HINTS):
            return upstream_error(ContextLengthError, resp, self.name, message)
        cls = _ERRORS.get(str(err.get("type") or ""))
        if cls is None:
            return error_for_status(resp, self.name, message)
        return upstream_error(cls, resp, self.name, message)


def _usage(raw: dict[str, Any]) -> Usage:
    """Anthropic counts cache reads and writes apart from ``input_tokens``; we add them."""
    cached = int(raw.get("cache_read_input_tokens") or 0)
    written = int(raw.get("cache_creation_input_tokens") or 0)
    return Usage(
        prompt_tokens=int(raw.get("input_tokens") or 0) + cached + written,
        completion_tokens=int(raw.get("output_tokens") or 0),
        cached_tokens=cached,
    )
