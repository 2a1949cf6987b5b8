"""``[[mock:...]]`` directives: a request says how the mock must answer it.

A directive sits in the last user message's text (``[[mock:status=500]]``) or in an
``x-mock-directive: status=500`` header; items are comma-separated, the header's win. A request
with a directive skips the random fault draw, so tests are deterministic. The marker is removed
from the text the reply quotes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["DIRECTIVE_HEADER", "Directive", "DirectiveError", "extract", "parse_directive"]

DIRECTIVE_HEADER = "x-mock-directive"
_MARKER = "[[mock:"
_PATTERN = re.compile(r"\[\[mock:([^\]]*)\]\]")
_FLAGS = frozenset(
    {
        "context_length",
        "content_filter",
        "error_body",
        "malformed",
        "overloaded",
        "reset",
        "timeout",
        "tool_call",
    }
)


class DirectiveError(ValueError):
    """A directive the mock does not understand (answered with a 400)."""


@dataclass(frozen=True, slots=True)
class Directive:
    """How to answer one request; the defaults mean "answer normally, without delay"."""

    status: int | None = None
    """Answer with this error status, in the provider's error format for that class."""
    retry_after: int | None = 1
    """The Retry-After seconds of a 429 (None: no header)."""
    latency_ms: float | None = None
    """Wait this long instead of the configured latency."""
    overloaded: bool = False
    context_length: bool = False
    content_filter: bool = False
    timeout: bool = False
    reset: bool = False
    malformed: bool = False
    error_body: bool = False
    tool_call: bool = False


def _status(value: str) -> int:
    status = int(value)
    if not 400 <= status <= 599:
        raise DirectiveError(f"mock directive status must be 400-599, got {status}")
    return status


def _retry_after(value: str) -> int | None:
    return None if value.lower() == "none" else max(0, int(value))


def _latency(value: str) -> float:
    return max(0.0, float(value))


_VALUES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "status": ("status", _status),
    "retry_after": ("retry_after", _retry_after),
    "latency": ("latency_ms", _latency),
}


def parse_directive(spec: str) -> Directive:
    """``"status=429,retry_after=none"`` => ``Directive(status=429, retry_after=None)``."""
    fields: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, has_value, value = (piece.strip() for piece in item.partition("="))
        if key in _FLAGS and not has_value:
            fields[key] = True
        elif key in _VALUES and has_value:
            name, convert = _VALUES[key]
            try:
                fields[name] = convert(value)
            except ValueError as exc:
                raise DirectiveError(f"bad mock directive {item!r}: {exc}") from exc
        else:
            raise DirectiveError(f"unknown mock directive {item!r}")
    return Directive(**fields)


def extract(text: str, header: str | None) -> tuple[Directive | None, str]:
    """The directive of a request (None if it has none) and its text without the markers."""
    specs: list[str] = []
    if _MARKER in text:
        specs = _PATTERN.findall(text)
        text = _PATTERN.sub("", text)
    if header:
        specs.append(header)
    if not specs:
        return None, text
    return parse_directive(",".join(specs)), text
