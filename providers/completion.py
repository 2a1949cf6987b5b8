"""Response-side pieces shared by the adapters: reading a JSON body, mapping finish reasons,
and writing the OpenAI ``chat.completion`` body every adapter returns.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from providers.errors import error_for_status
from schemas.chat import Usage
from schemas.errors import MalformedResponseError

__all__ = ["Completion", "created_at", "finish_reason", "openai_tool_call", "read_json"]

_FINISH_REASONS: dict[str, str] = {
    # Anthropic Messages and Bedrock Converse share most of their vocabulary.
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
    # Gemini finishReason.
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}


def finish_reason(raw: str | None, *, has_tool_calls: bool) -> str:
    """OpenAI's finish_reason for a provider's stop reason (``stop`` when it has no better)."""
    mapped = _FINISH_REASONS.get(raw or "", "stop")
    if has_tool_calls and mapped == "stop":
        return "tool_calls"  # Gemini says STOP when it calls a function
    return mapped


def openai_tool_call(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    """A tool call in OpenAI's shape: arguments as a JSON string."""
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments, separators=(",", ":"))},
    }


@dataclass(frozen=True)
class Completion:
    """One translated answer; ``body()`` writes it as an OpenAI ``chat.completion``."""

    id: str
    model: str
    created: int
    text: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str
    usage: Usage

    def body(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.text, "refusal": None}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        choice = {"index": 0, "message": message, "logprobs": None,
                  "finish_reason": self.finish_reason}
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
                "total_tokens": self.usage.total_tokens,
                "prompt_tokens_details": {"cached_tokens": self.usage.cached_tokens},
            },
        }


def created_at(resp: httpx.Response) -> int:
    """The answer's time (the HTTP Date header), for formats whose body carries none."""
    date = resp.headers.get("date")
    if date:
        try:
            return int(parsedate_to_datetime(date).timestamp())
        except (TypeError, ValueError):
            pass
    return int(time.time())


def read_json(resp: httpx.Response, provider: str) -> dict[str, Any]:
    """The body as a JSON object, or the mapped error when it is not one.

    A one-element list holding an object is unwrapped: some Google endpoints send errors so.
    """
    try:
        body = json.loads(resp.content)
    except (ValueError, UnicodeDecodeError) as exc:
        if resp.status_code >= 400:
            raise error_for_status(resp, provider, resp.text[:200] or "error") from exc
        raise MalformedResponseError(
            "response body is not valid JSON", provider=provider, status=resp.status_code
        ) from exc
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if not isinstance(body, dict):
        if resp.status_code >= 400:
            raise error_for_status(resp, provider, resp.text[:200] or "error")
        raise MalformedResponseError(
            "response body is not a JSON object", provider=provider, status=resp.status_code
        )
    return body
