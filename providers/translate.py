"""Request-side pieces shared by the adapters that do not speak OpenAI's format.

Images (``data:`` URLs and links), function tools, ``tool_choice``, assistant tool calls,
``response_format`` and turn merging are read here once, into small value objects that each
adapter writes out in its own wire shape.
"""

from __future__ import annotations

import binascii
import json
import re
from base64 import b64decode
from dataclasses import dataclass
from typing import Any, Literal

from schemas.chat import ChatMessage, ContentPart
from schemas.errors import BadRequestError

__all__ = [
    "FunctionTool",
    "Image",
    "OutputFormat",
    "ToolCall",
    "ToolChoice",
    "function_tools",
    "image_of",
    "merge_turns",
    "output_format",
    "parsed_tool_calls",
    "plain_text",
    "stop_list",
    "system_texts",
    "tool_choice",
    "tool_names",
    "unsupported_part",
]

_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)(?:;[^,;]*)*;base64,(?P<data>.*)$", re.S)


@dataclass(frozen=True)
class Image:
    """An image content part: inline bytes (``data`` is base64) or a link (``url``)."""

    media_type: str | None
    data: str | None = None
    url: str | None = None


def image_of(part: ContentPart, provider: str) -> Image:
    """The image of an ``image_url`` part: a base64 ``data:`` URL, or a link to fetch."""
    url = str((part.image_url or {}).get("url") or "")
    if url.startswith("data:"):
        match = _DATA_URL.match(url)
        if match is None:
            raise BadRequestError(
                "image data: URL must be base64 encoded (data:<type>;base64,...)", provider=provider
            )
        try:
            b64decode(match["data"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequestError("image data: URL is not valid base64", provider=provider) from exc
        return Image(media_type=match["type"].lower(), data=match["data"])
    if not url:
        raise BadRequestError("image_url part has no url", provider=provider)
    return Image(media_type=None, url=url)


def unsupported_part(part: ContentPart, provider: str) -> BadRequestError:
    """The error for a content part a provider has no place for (never dropped silently)."""
    return BadRequestError(f"{provider} does not accept {part.type!r} content parts",
                           provider=provider)


def plain_text(message: ChatMessage, provider: str) -> str:
    """The text of a message that may hold only text (system, developer, tool results)."""
    for part in message.content if isinstance(message.content, list) else []:
        if part.type != "text":
            raise BadRequestError(
                f"{provider} accepts only text in {message.role} messages, got {part.type!r}",
                provider=provider,
            )
    return message.text()


def system_texts(messages: list[ChatMessage], provider: str) -> list[str]:
    """The non-empty texts of the system and developer messages, in order."""
    texts = (plain_text(m, provider) for m in messages if m.role in ("system", "developer"))
    return [text for text in texts if text]


@dataclass(frozen=True)
class FunctionTool:
    """An OpenAI function tool: name, description and JSON Schema of its arguments."""

    name: str
    description: str | None
    parameters: dict[str, Any]


def function_tools(tools: list[dict[str, Any]] | None, provider: str) -> list[FunctionTool]:
    """The request's tools; anything but ``{"type": "function"}`` is refused by name."""
    found = []
    for tool in tools or []:
        fn = tool.get("function")
        if tool.get("type") != "function" or not isinstance(fn, dict) or not fn.get("name"):
            raise BadRequestError(
                f"{provider} accepts only function tools, got {tool.get('type')!r}",
                provider=provider,
            )
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        found.append(FunctionTool(str(fn["name"]), fn.get("description"), dict(params)))
    return found


@dataclass(frozen=True)
class ToolChoice:
    """OpenAI's ``tool_choice``: auto, none, required, or one named function."""

    mode: Literal["auto", "none", "required", "function"]
    name: str | None = None


_MODES = {mode: ToolChoice(mode=mode) for mode in ("auto", "none", "required")}


def tool_choice(value: str | dict[str, Any] | None, provider: str) -> ToolChoice | None:
    """Read ``tool_choice`` (a mode string, or ``{"type": "function", "function": {name}}``)."""
    if value is None:
        return None
    if isinstance(value, str) and value in _MODES:
        return _MODES[value]
    if isinstance(value, dict) and value.get("type") == "function":
        name = (value.get("function") or {}).get("name")
        if name:
            return ToolChoice(mode="function", name=str(name))
    raise BadRequestError(f"unsupported tool_choice {value!r}", provider=provider)


@dataclass(frozen=True)
class ToolCall:
    """One tool call an assistant made earlier in the conversation."""

    id: str
    name: str
    arguments: dict[str, Any]


def parsed_tool_calls(message: ChatMessage, provider: str) -> list[ToolCall]:
    """An assistant message's ``tool_calls``, arguments decoded from their JSON string."""
    calls = []
    for raw in message.tool_calls or []:
        fn = raw.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except ValueError as exc:
            raise BadRequestError(
                f"tool call {raw.get('id')!r} arguments are not valid JSON", provider=provider
            ) from exc
        if not isinstance(args, dict):
            raise BadRequestError(
                f"tool call {raw.get('id')!r} arguments must be a JSON object", provider=provider
            )
        call_id = str(raw.get("id") or "")
        calls.append(ToolCall(id=call_id, name=str(fn.get("name")), arguments=args))
    return calls


def tool_names(messages: list[ChatMessage], provider: str) -> dict[str, str]:
    """Tool call id → function name, for wire formats that answer a call by name."""
    return {
        call.id: call.name
        for m in messages
        if m.role == "assistant"
        for call in parsed_tool_calls(m, provider)
    }


@dataclass(frozen=True)
class OutputFormat:
    """``response_format``: plain text, any JSON object, or JSON matching a schema."""

    kind: Literal["text", "json_object", "json_schema"]
    schema: dict[str, Any] | None = None
    name: str | None = None


def output_format(value: dict[str, Any] | None, provider: str) -> OutputFormat | None:
    """Read ``response_format``; a json_schema one must carry its schema."""
    if value is None:
        return None
    kind = value.get("type")
    if kind in ("text", "json_object"):
        return OutputFormat(kind=kind)
    spec = value.get("json_schema")
    if kind == "json_schema" and isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
        return OutputFormat(kind="json_schema", schema=spec["schema"], name=spec.get("name"))
    raise BadRequestError(f"unsupported response_format {value!r}", provider=provider)


def stop_list(stop: str | list[str] | None) -> list[str] | None:
    """``stop`` as a list, whichever form it came in."""
    if stop is None:
        return None
    return [stop] if isinstance(stop, str) else list(stop)


def merge_turns(turns: list[tuple[str, list[dict[str, Any]]]], key: str) -> list[dict[str, Any]]:
    """Join consecutive turns of one role (tool results after a call, say) into one message.

    Formats that demand alternating roles get them; ``key`` names the list of blocks
    (``content`` or ``parts``).
    """
    merged: list[dict[str, Any]] = []
    for role, blocks in turns:
        if merged and merged[-1]["role"] == role:
            merged[-1][key].extend(blocks)
        else:
            merged.append({"role": role, key: list(blocks)})
    return merged
