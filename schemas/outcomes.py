"""What a worker hands storage once a request's attempt ends."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from schemas.chat import Usage

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
