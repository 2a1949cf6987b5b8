"""The parts every wire format supplies, and the value objects passed between them.

The shared request handling (``mock_upstream.handler``) does auth, latency, faults, rate limits
and stats once; a ``WireFormat`` only says how its provider spells requests, answers and errors.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from aiohttp import web

from mock_upstream.text import PromptCount, Reply

__all__ = [
    "DEFAULT_STATUSES",
    "JSON",
    "ErrorKind",
    "ErrorSpec",
    "MockError",
    "ParsedRequest",
    "RateInfo",
    "RequestRejected",
    "WireFormat",
    "invalid",
    "new_id",
    "optional_count",
]

JSON = dict[str, Any]


class ErrorKind(Enum):
    """The error classes the mock can answer with, whatever the provider calls them."""

    INVALID_REQUEST = "invalid_request"
    CONTEXT_LENGTH = "context_length"
    AUTHENTICATION = "authentication"
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    TIMEOUT = "timeout"
    RATE_LIMIT = "rate_limit"
    SERVER = "server"
    OVERLOADED = "overloaded"


DEFAULT_STATUSES: Mapping[int, ErrorKind] = {
    400: ErrorKind.INVALID_REQUEST,
    401: ErrorKind.AUTHENTICATION,
    403: ErrorKind.PERMISSION,
    404: ErrorKind.NOT_FOUND,
    408: ErrorKind.TIMEOUT,
    429: ErrorKind.RATE_LIMIT,
    503: ErrorKind.OVERLOADED,
    504: ErrorKind.TIMEOUT,
    529: ErrorKind.OVERLOADED,
}
"""The error class a ``status=N`` directive means; any other status is a server error."""


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """How one provider reports one error class: its status, type name and default message."""

    status: int
    type: str
    message: str
    code: str | None = None


@dataclass(frozen=True, slots=True)
class MockError:
    """An error to answer with; ``message``/``param``/``code`` override the format's defaults."""

    kind: ErrorKind
    message: str | None = None
    param: str | None = None
    code: str | None = None


class RequestRejected(Exception):
    """Raised by a format's ``authenticate``/``parse`` to answer with an error."""

    def __init__(self, error: MockError, model: str = "") -> None:
        super().__init__(error.message or error.kind.value)
        self.error = error
        self.model = model


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """What the mock needs of a request body, whatever the wire format."""

    model: str
    prompt: PromptCount
    max_tokens: int | None
    tool_name: str | None = None
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RateInfo:
    """The state of the rate limit window after this request."""

    limit: int
    remaining: int
    reset_seconds: float
    allowed: bool


@dataclass(frozen=True)
class WireFormat:
    """One provider's wire protocol: plain functions plus the data they differ in."""

    kind: str
    """The path kind counted in stats: openai, azure, anthropic, gemini or bedrock."""
    authenticate: Callable[[web.Request], None]
    """Raise ``RequestRejected`` when the request lacks the provider's credentials."""
    parse: Callable[[JSON, web.Request], ParsedRequest]
    """Read the decoded body; raise ``RequestRejected`` for what the provider refuses."""
    render_success: Callable[[ParsedRequest, Reply], JSON]
    render_error: Callable[[ErrorSpec, MockError, int], tuple[JSON, Mapping[str, str]]]
    """Body and extra headers of an error, given its spec, the error and the HTTP status."""
    rate_limit_headers: Callable[[RateInfo], Mapping[str, str]]
    errors: Mapping[ErrorKind, ErrorSpec]
    """Every error class; the INVALID_REQUEST message is the one for a body that is not JSON."""
    context_message: str
    """The context-length error message, formatted with ``tokens`` and ``limit``."""
    context_window: int
    request_id_header: str | None = None
    request_id_prefix: str = "req_"


_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count(1)


def new_id(prefix: str) -> str:
    """A unique id, cheap to make: a per-process random part and a counter."""
    return f"{prefix}{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def optional_count(body: JSON, name: str, model: str) -> int | None:
    """The integer field ``name`` of ``body`` (absent => None); a 400 unless it is >= 0."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        message = f"Invalid '{name}': expected a non-negative integer, got {value!r}."
        raise RequestRejected(MockError(ErrorKind.INVALID_REQUEST, message, param=name), model)
    return value


def invalid(message: str, model: str = "", *, param: str | None = None) -> RequestRejected:
    """A 400 invalid-request rejection, to raise."""
    return RequestRejected(MockError(ErrorKind.INVALID_REQUEST, message, param=param), model)
