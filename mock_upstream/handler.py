"""The request handling every wire format shares: auth, parsing, directives, the rate limit,
latency, faults, stats; the format only parses and renders.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from mock_upstream.directives import DIRECTIVE_HEADER, Directive, DirectiveError, extract
from mock_upstream.faults import draw_fault, draw_latency
from mock_upstream.formats.base import (
    DEFAULT_STATUSES,
    ErrorKind,
    MockError,
    ParsedRequest,
    RateInfo,
    RequestRejected,
    WireFormat,
    invalid,
    new_id,
)
from mock_upstream.state import STATE, MockState
from mock_upstream.text import make_reply

__all__ = ["llm_handler"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_NORMAL = Directive()
_RESET_STATUS = 499
"""Status of the response aiohttp is handed after the connection was reset (never sent)."""


def llm_handler(fmt: WireFormat) -> Handler:
    """The aiohttp handler of one LLM endpoint speaking ``fmt``."""

    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        state.stats.enter()
        outcome = "error"
        try:
            response = await _respond(state, fmt, request)
            outcome = "reset" if response is None else str(response.status)
            return response if response is not None else web.Response(status=_RESET_STATUS)
        except asyncio.CancelledError:
            outcome = "cancelled"  # the client went away (handler cancellation is on)
            raise
        finally:
            state.stats.leave(outcome)

    return handle


async def _respond(state: MockState, fmt: WireFormat, request: web.Request) -> web.Response | None:
    try:
        parsed, directive = await _accept(fmt, request)
    except RequestRejected as exc:
        state.stats.arrive(
            fmt.kind, exc.model or next(iter(request.match_info.values()), "unknown")
        )
        return _error_response(fmt, exc.error)
    state.stats.arrive(fmt.kind, parsed.model)
    config = state.config
    rate = None
    if config.rate_limit_rpm is not None:
        key = parsed.model if config.per_model_limits else ""
        rate = state.limiter.acquire(key, config.rate_limit_rpm)
        if not rate.allowed:
            retry_after = max(1, math.ceil(rate.reset_seconds))
            error = MockError(ErrorKind.RATE_LIMIT)
            return _error_response(fmt, error, rate=rate, retry_after=retry_after)
    if directive is None:
        directive = draw_fault(config, state.rng) or _NORMAL
    return await _answer(state, fmt, request, parsed, directive, rate)


async def _accept(fmt: WireFormat, request: web.Request) -> tuple[ParsedRequest, Directive | None]:
    """Authenticate and parse the request, and find its directive."""
    fmt.authenticate(request)
    try:
        body = json.loads(await request.read())
    except ValueError as exc:
        raise RequestRejected(MockError(ErrorKind.INVALID_REQUEST)) from exc
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    parsed = fmt.parse(body, request)
    try:
        directive, text = extract(
            parsed.prompt.last_user_text, request.headers.get(DIRECTIVE_HEADER)
        )
    except DirectiveError as exc:
        raise invalid(str(exc), parsed.model) from exc
    parsed.prompt.last_user_text = text
    return parsed, directive


async def _answer(
    state: MockState,
    fmt: WireFormat,
    request: web.Request,
    parsed: ParsedRequest,
    directive: Directive,
    rate: RateInfo | None,
) -> web.Response | None:
    """Wait, then answer as ``directive`` says: an error, a reset, or a (mangled) reply."""
    if directive.latency_ms is not None:
        delay = directive.latency_ms / 1000.0
    else:
        delay = draw_latency(state.config, state.rng)
    if delay > 0:
        await asyncio.sleep(delay)
    if directive.timeout:
        await asyncio.sleep(state.config.hang_seconds)
    if directive.reset:
        _abort(request)
        return None
    planned = _planned_error(fmt, parsed, directive)
    if planned is not None:
        error, status = planned
        if directive.error_body:
            status = 200
        retry_after = directive.retry_after if status == 429 else None
        return _error_response(fmt, error, status=status, rate=rate, retry_after=retry_after)
    reply = make_reply(
        parsed.prompt.last_user_text,
        parsed.max_tokens,
        tool_name=parsed.tool_name if directive.tool_call else None,
        filtered=directive.content_filter,
        latency_ms=round(delay * 1000),
    )
    body = _dumps(fmt.render_success(parsed, reply))
    if directive.malformed:
        body = body[: len(body) // 2]
    return _response(fmt, 200, body, _rate_headers(fmt, rate))


def _planned_error(
    fmt: WireFormat, parsed: ParsedRequest, directive: Directive
) -> tuple[MockError, int] | None:
    """The error ``directive`` asks for (or a too-long prompt causes), with its status."""
    tokens = parsed.prompt.tokens
    if directive.context_length or tokens > fmt.context_window:
        limit = fmt.context_window
        reported = tokens if tokens > limit else limit + tokens
        message = fmt.context_message.format(tokens=reported, limit=limit)
        error = MockError(ErrorKind.CONTEXT_LENGTH, message, param="messages")
        return error, fmt.errors[ErrorKind.CONTEXT_LENGTH].status
    if directive.status is not None:
        kind = DEFAULT_STATUSES.get(directive.status, ErrorKind.SERVER)
        return MockError(kind), directive.status
    if directive.overloaded:
        return MockError(ErrorKind.OVERLOADED), fmt.errors[ErrorKind.OVERLOADED].status
    if directive.error_body:
        return MockError(ErrorKind.SERVER), fmt.errors[ErrorKind.SERVER].status
    return None


def _error_response(
    fmt: WireFormat,
    error: MockError,
    *,
    status: int | None = None,
    rate: RateInfo | None = None,
    retry_after: int | None = None,
) -> web.Response:
    spec = fmt.errors[error.kind]
    body, error_headers = fmt.render_error(spec, error, status or spec.status)
    headers = {**_rate_headers(fmt, rate), **error_headers}
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    return _response(fmt, status or spec.status, _dumps(body), headers)


def _rate_headers(fmt: WireFormat, rate: RateInfo | None) -> Mapping[str, str]:
    return {} if rate is None else fmt.rate_limit_headers(rate)


def _response(
    fmt: WireFormat, status: int, body: bytes, headers: Mapping[str, str]
) -> web.Response:
    response = web.Response(
        body=body, status=status, headers=headers, content_type="application/json"
    )
    if fmt.request_id_header is not None:
        response.headers[fmt.request_id_header] = new_id(fmt.request_id_prefix)
    return response


def _dumps(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _abort(request: web.Request) -> None:
    """Drop the connection with a TCP reset (SO_LINGER 0), sending no response."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
