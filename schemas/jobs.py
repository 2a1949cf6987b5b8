"""Job and request states, and the views of a job that clients read."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.keys import Tier

__all__ = [
    "ACTIVE_JOB_STATUSES",
    "TERMINAL_JOB_STATUSES",
    "TERMINAL_REQUEST_STATES",
    "ChunkMessage",
    "JobStatus",
    "JobView",
    "RequestState",
]


class JobStatus(StrEnum):
    """A job's status, in the OpenAI Batch API vocabulary."""

    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


TERMINAL_JOB_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.EXPIRED, JobStatus.CANCELLED}
)
ACTIVE_JOB_STATUSES = frozenset({JobStatus.IN_PROGRESS, JobStatus.CANCELLING})


class RequestState(StrEnum):
    """One request's state.

    queued → running → succeeded | failed; running → deferred (retry later) → running …;
    queued | deferred → cancelled | expired.
    """

    QUEUED = "queued"
    DEFERRED = "deferred"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


TERMINAL_REQUEST_STATES = frozenset(
    {RequestState.SUCCEEDED, RequestState.FAILED, RequestState.CANCELLED, RequestState.EXPIRED}
)


class ChunkMessage(BaseModel):
    """The payload of one queue message: which requests of which job to run. Ids only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: str
    seqs: tuple[int, ...] = Field(min_length=1)
    tier: Tier


class JobView(BaseModel):
    """What ``status`` shows: a job's state, counts, usage and cost so far."""

    id: str
    status: JobStatus
    tier: Tier
    total: int
    counts: dict[RequestState, int]
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    metadata: dict[str, Any]
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None

    @property
    def finished(self) -> int:
        """Requests in a terminal state."""
        return sum(self.counts.get(s, 0) for s in TERMINAL_REQUEST_STATES)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_JOB_STATUSES
