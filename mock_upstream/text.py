"""Deterministic token counts and mock replies, the same for every wire format.

A token is four characters (at least one per text); an image is ``IMAGE_TOKENS``; every message
adds one. The reply is ``"Mock reply: "`` and the first ``REPLY_WORDS`` words of the last user
message, cut to ``max_tokens`` (finish reason "length") when that is smaller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "CHARS_PER_TOKEN",
    "IMAGE_TOKENS",
    "REPLY_PREFIX",
    "REPLY_WORDS",
    "Finish",
    "PromptCount",
    "Reply",
    "count_tokens",
    "make_reply",
]

CHARS_PER_TOKEN = 4
IMAGE_TOKENS = 85
REPLY_PREFIX = "Mock reply:"
REPLY_WORDS = 12


def count_tokens(text: str) -> int:
    """``max(1, ceil(len(text) / 4))``: the mock's tokenizer."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


class Finish(Enum):
    """Why the reply ended; each format names it in its own vocabulary."""

    STOP = "stop"
    LENGTH = "length"
    TOOL_CALL = "tool_call"
    CONTENT_FILTER = "content_filter"


@dataclass(slots=True)
class PromptCount:
    """Counts a request's prompt tokens while a format walks its messages."""

    tokens: int = 0
    last_user_text: str = ""

    def message(self) -> None:
        """One message (or system prompt): one token of overhead."""
        self.tokens += 1

    def text(self, text: str) -> None:
        self.tokens += count_tokens(text)

    def image(self) -> None:
        self.tokens += IMAGE_TOKENS


@dataclass(frozen=True, slots=True)
class Reply:
    """What the mock model answers; ``text`` is empty for tool calls and filtered replies."""

    text: str
    completion_tokens: int
    finish: Finish
    tool_name: str | None = None
    latency_ms: int = 0
    """How long the mock made the caller wait (Bedrock reports it in ``metrics``)."""


def make_reply(
    user_text: str,
    max_tokens: int | None,
    *,
    tool_name: str | None = None,
    filtered: bool = False,
    latency_ms: int = 0,
) -> Reply:
    """The reply to ``user_text``: a tool call to ``tool_name`` if given, empty if ``filtered``."""
    if filtered:
        return Reply("", 0, Finish.CONTENT_FILTER, latency_ms=latency_ms)
    if tool_name is not None:
        tokens = count_tokens(tool_name + "{}")
        return Reply("", tokens, Finish.TOOL_CALL, tool_name, latency_ms)
    words = user_text.split(maxsplit=REPLY_WORDS)[:REPLY_WORDS]
    full = " ".join([REPLY_PREFIX, *words])
    tokens = count_tokens(full)
    if max_tokens is not None and max_tokens < tokens:
        kept = max(0, max_tokens)
        return Reply(full[: kept * CHARS_PER_TOKEN], kept, Finish.LENGTH, latency_ms=latency_ms)
    return Reply(full, tokens, Finish.STOP, latency_ms=latency_ms)
