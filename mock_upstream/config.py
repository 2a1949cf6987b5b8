"""The mock upstream's knobs: latency, fault rates and the rate limit, changeable at runtime.

Every rate is a share of requests in ``[0, 1]``. Faults are drawn once per request, in the order
timeout, reset, error (500), overload, malformed, error body, throttle (429); their rates add up
(past 1 the later ones never fire). A ``[[mock:...]]`` directive in the request replaces the draw.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DEFAULT_HANG_SECONDS", "RATE_WINDOW_SECONDS", "MockConfig"]

DEFAULT_HANG_SECONDS = 300.0
"""How long a ``timeout`` fault hangs before answering: longer than any sane client timeout."""

RATE_WINDOW_SECONDS = 60.0
"""The sliding window ``rate_limit_rpm`` counts requests over."""

_Rate = Field(default=0.0, ge=0.0, le=1.0)


class MockConfig(BaseModel):
    """How the mock upstream behaves; mutate it (or POST /_mock/config) to change it live."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    latency_ms: float = Field(default=0.0, ge=0.0)
    """Added before every answer (``asyncio.sleep``)."""
    jitter_ms: float = Field(default=0.0, ge=0.0)
    """Latency varies uniformly by up to this much either way (never below zero)."""
    error_rate: float = _Rate
    """Share of 500s in the provider's server-error format."""
    overload_rate: float = _Rate
    """Share of the provider's overloaded status: 529 for Anthropic, 503 for the others."""
    rate_limit_rpm: int | None = Field(default=None, ge=1)
    """Requests allowed per sliding 60 s window; over it => 429 with Retry-After."""
    per_model_limits: bool = False
    """Count ``rate_limit_rpm`` per model instead of over the whole server."""
    timeout_rate: float = _Rate
    """Share of requests that hang for ``hang_seconds`` before answering."""
    hang_seconds: float = Field(default=DEFAULT_HANG_SECONDS, ge=0.0)
    reset_rate: float = _Rate
    """Share of connections aborted (TCP reset) without a response."""
    malformed_rate: float = _Rate
    """Share of 200s whose JSON body is cut in half."""
    error_body_rate: float = _Rate
    """Share of 200s whose body is the provider's error object."""
    throttle_rate: float = _Rate
    """Share of 429s with ``Retry-After: 1``, drawn at random (unlike ``rate_limit_rpm``)."""
    seed: int | None = None
    """Seed of the fault and jitter draws, for reproducible runs."""

    def fault_rates(self) -> tuple[float, ...]:
        """The fault rates in draw order: timeout, reset, error, overload, malformed, error body,
        throttle."""
        return (
            self.timeout_rate,
            self.reset_rate,
            self.error_rate,
            self.overload_rate,
            self.malformed_rate,
            self.error_body_rate,
            self.throttle_rate,
        )
