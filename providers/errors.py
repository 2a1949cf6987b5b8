"""Mapping an HTTP status to our error class: the part every provider shares."""

from __future__ import annotations

import httpx

from schemas.errors import (
    AuthenticationError,
    BadRequestError,
    OverloadedError,
    RateLimitedError,
    ServerError,
    UpstreamError,
)

__all__ = ["error_for_status", "retry_after_seconds", "upstream_error"]

_BY_STATUS: dict[int, type[UpstreamError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: BadRequestError,
    408: ServerError,
    409: ServerError,
    413: BadRequestError,
    422: BadRequestError,
    429: RateLimitedError,
    503: OverloadedError,
    529: OverloadedError,
}


def retry_after_seconds(resp: httpx.Response) -> float | None:
    """The Retry-After header (seconds form, or retry-after-ms) when present and sane."""
    ms = resp.headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            return None
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: let backoff decide


def error_for_status(resp: httpx.Response, provider: str, message: str) -> UpstreamError:
    """The error class for a non-2xx status, with provider, status and Retry-After filled in."""
    cls = _BY_STATUS.get(resp.status_code)
    if cls is None:
        cls = ServerError if resp.status_code >= 500 else BadRequestError
    return upstream_error(cls, resp, provider, message)


def upstream_error(
    cls: type[UpstreamError], resp: httpx.Response, provider: str, message: str
) -> UpstreamError:
    """An error of ``cls`` for this response: provider, status and Retry-After filled in."""
    return cls(
        message,
        provider=provider,
        status=resp.status_code,
        retry_after=retry_after_seconds(resp),
    )
