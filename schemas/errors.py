"""The one exception hierarchy of batchyard.

    GatewayError                      base; ``retryable`` tells a worker whether to try again
    ├── ConfigError                   a settings value or catalog file is wrong
    ├── InputError                    a submitted job is malformed (carries line-numbered problems)
    ├── NotFoundError                 a job (or other object) does not exist for this caller
    ├── AccessDeniedError             the API key is unknown, revoked or missing where required
    ├── DatabaseUnavailableError      the database does not answer (retryable)
    ├── RoutingError                  no deployment can serve a model
    │   ├── UnknownModelError         the model name is not in the catalog
    │   ├── NoDeploymentError         none has the required tags or a large enough window
    │   ├── UnavailableError          every eligible deployment is cooling down (policy: fail)
    │   └── RoutingStateError         the shared routing state (Redis) does not answer (retryable)
    ├── DestinationRefused            a webhook URL is not public nor allow-listed (destinations.py)
    ├── SignatureError                a received webhook does not verify (webhooks.py)
    └── UpstreamError                 an upstream call failed; carries provider and status
        ├── RateLimitedError          429 / throttled, with ``retry_after`` (retryable)
        ├── OverloadedError           503 / 529 / provider unavailable (retryable)
        ├── ServerError               5xx (retryable)
        ├── UpstreamTimeoutError      no answer within the timeout (retryable)
        ├── ConnectionFailedError     connect refused, reset, DNS (retryable)
        ├── MalformedResponseError    a body that is not the provider's format (retryable)
        ├── AuthenticationError       401 / 403
        ├── BadRequestError           400 / 404 / 422
        │   └── ContextLengthError    the prompt does not fit the model's window
        └── ContentFilteredError      the provider refused the content

Workers decide to retry from ``retryable`` alone, never from message text. Foreign exceptions are
converted once per boundary with ``raise ... from exc``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AccessDeniedError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "ConnectionFailedError",
    "ContentFilteredError",
    "ContextLengthError",
    "DatabaseUnavailableError",
    "GatewayError",
    "InputError",
    "InputProblem",
    "MalformedResponseError",
    "NoDeploymentError",
    "NotFoundError",
    "OverloadedError",
    "RateLimitedError",
    "RoutingError",
    "RoutingStateError",
    "ServerError",
    "UnavailableError",
    "UnknownModelError",
    "UpstreamError",
    "UpstreamTimeoutError",
]


class GatewayError(Exception):
    """Base of every error batchyard raises on purpose."""

    retryable: bool = False
    code: str = "gateway_error"


class ConfigError(GatewayError):
    """A settings value or the routing catalog is invalid."""

    code = "config_error"


@dataclass(frozen=True)
class InputProblem:
    """One thing wrong with one line of a submitted job (line 0: the job as a whole)."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}" if self.line else self.reason


class InputError(GatewayError):
    """A submitted job is malformed; nothing was written."""

    code = "invalid_input"

    def __init__(self, problems: list[InputProblem], *, truncated: bool = False) -> None:
        self.problems = problems
        self.truncated = truncated
        shown = "\n".join(f"  {p}" for p in problems)
        more = "\n  (more problems not shown)" if truncated else ""
        super().__init__(f"input rejected, {len(problems)} problem(s):\n{shown}{more}")


class NotFoundError(GatewayError):
    """The object does not exist, or is not visible to this caller."""

    code = "not_found"


class AccessDeniedError(GatewayError):
    """The caller's API key is unknown, revoked, or missing where one is required."""

    code = "access_denied"


class DatabaseUnavailableError(GatewayError):
    """The database does not answer (down, restarting, unreachable); try again later."""

    retryable = True
    code = "database_unavailable"


class RoutingError(GatewayError):
    """No deployment can serve the request."""

    code = "routing_error"


class UnknownModelError(RoutingError):
    """The model name is neither a model nor an alias in the catalog."""

    code = "model_not_found"


class NoDeploymentError(RoutingError):
    """No deployment of the model or its fallbacks has the required tags or window."""

    code = "no_eligible_deployment"


class UnavailableError(RoutingError):
    """Every eligible deployment is cooling down and the catalog says not to wait."""

    code = "no_healthy_deployment"


class RoutingStateError(RoutingError):
    """The shared routing state (limits, health) in Redis does not answer."""

    retryable = True
    code = "routing_unavailable"


class UpstreamError(GatewayError):
    """An upstream call failed."""

    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status = status
        self.retry_after = retry_after

    def describe(self) -> str:
        """One line naming the provider and status that produced the error."""
        where = self.provider or "upstream"
        status = f" {self.status}" if self.status is not None else ""
        return f"{where}{status}: {self.message}"


class RateLimitedError(UpstreamError):
    """The upstream throttled the call (429); ``retry_after`` when it said so."""

    retryable = True
    code = "rate_limited"


class OverloadedError(UpstreamError):
    """The upstream is overloaded or unavailable (503, 529)."""

    retryable = True
    code = "overloaded"


class ServerError(UpstreamError):
    """The upstream failed with a 5xx."""

    retryable = True
    code = "server_error"


class UpstreamTimeoutError(UpstreamError):
    """The upstream did not answer in time."""

    retryable = True
    code = "timeout"


class ConnectionFailedError(UpstreamError):
    """The connection could not be made or was cut."""

    retryable = True
    code = "connection_error"


class MalformedResponseError(UpstreamError):
    """The upstream answered with a body that is not its documented format."""

    retryable = True
    code = "malformed_response"


class AuthenticationError(UpstreamError):
    """The upstream rejected the credentials (401, 403)."""

    code = "authentication_error"


class BadRequestError(UpstreamError):
    """The upstream rejected the request as invalid (400, 404, 422)."""

    code = "invalid_request"


class ContextLengthError(BadRequestError):
    """The prompt does not fit the model's context window."""

    code = "context_length_exceeded"


class ContentFilteredError(UpstreamError):
    """The upstream refused the content."""

    code = "content_filter"
