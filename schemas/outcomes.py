"""What a worker hands storage once a request's attempt ends."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from schemas.chat import Usage
from schemas.jobs import RoutingOptions
from schemas.tenants import DEFAULT_TENANT, TenantLimits

__all__ = ["Claimed", "Outcome", "OutcomeKind"]


class OutcomeKind(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEFERRED = "deferred"


class Claimed(BaseModel):
    """A request row a worker has leased to run."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    seq: int
    custom_id: str
    model: str
    body: str
    attempts: int
    claim: str
    route: str | None = None
    """The route so far (JSON, see ``routing.trail``): earlier attempts' calls and waits."""
    routing: RoutingOptions | None = None
    """The job's routing options: a strategy override and required deployment tags."""
    tenant_id: str = DEFAULT_TENANT
    tenant_limits: TenantLimits | None = None
    """The tenant's limits as of the claim (read with each chunk, so a change applies soon)."""
    key_id: str | None = None
    """The API key that submitted the job (None: submitted without a key)."""
    key_limits: TenantLimits | None = None
    """That key's own limits, enforced on top of the tenant's."""


class Outcome(BaseModel):
    """The end of one attempt: a result to keep, a final error, or a retry at ``not_before``."""

    model_config = ConfigDict(frozen=True)

    kind: OutcomeKind
    job_id: str
    seq: int
    claim: str
    deployment: str | None = None
    provider: str | None = None
    status_code: int | None = None
    upstream_request_id: str | None = None
    response: str | None = None
    usage: Usage = Usage()
    cost: Decimal = Decimal(0)
    latency_ms: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    not_before: float | None = None
    route: str | None = None
    """JSON: every call of every attempt (deployment, status, error), waits, fallback path."""
    throttled: bool = False
    """A deferral caused by our own limits or cooldowns, not by a failed call: the attempt it
    claimed is given back, so waiting for capacity never uses up ``max_attempts``."""
