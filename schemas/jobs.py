"""Job and request states, and the views of a job that clients read."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.catalog import Strategy
from schemas.keys import Tier

__all__ = [
    "ACTIVE_JOB_STATUSES",
    "TERMINAL_JOB_STATUSES",
    "TERMINAL_REQUEST_STATES",
    "ChunkMessage",
    "JobEnding",
    "JobOptions",
    "JobStatus",
    "JobView",
    "RequestState",
    "RoutingOptions",
]


class JobStatus(StrEnum):
    """A job's status, in the OpenAI Batch API vocabulary.

    validating → in_progress → completed | failed (every request failed); in_progress →
    cancelling → cancelled; in_progress → finalizing (its completion window ran out: no new
    request starts, running ones finish) → expired.
    """

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
ACTIVE_JOB_STATUSES = frozenset({JobStatus.IN_PROGRESS, JobStatus.CANCELLING, JobStatus.FINALIZING})
"""Not ended: requests may still run and be counted (the job ends via ``finalize_job``)."""


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


_WINDOW = re.compile(r"^(\d{1,6})([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class RoutingOptions(BaseModel):
    """Per-job routing choices: a strategy override and tags every deployment must carry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Strategy | None = None
    """Overrides every model group's strategy (weighted, least_in_flight, lowest_latency,
    lowest_cost, ordered); an unknown name is rejected at submit."""
    require_tags: dict[str, str] = {}


class JobOptions(BaseModel):
    """What a submitter may set on a job besides its requests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metadata: dict[str, Any] = {}
    webhook_url: str | None = Field(default=None, max_length=2048)
    completion_window: str | None = None
    routing: RoutingOptions | None = None

    @field_validator("completion_window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None and not _WINDOW.match(value):
            raise ValueError("completion_window must look like 90s, 30m, 24h or 7d")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("webhook_url must be an http(s) URL")
        return value

    def window(self) -> timedelta | None:
        """The completion window as a duration, if any."""
        match = _WINDOW.match(self.completion_window or "")
        if match is None:
            return None
        return timedelta(seconds=int(match.group(1)) * _UNIT_S[match.group(2)])


class JobView(BaseModel):
    """What ``status`` shows: a job's state, counts, usage and cost so far."""

    id: str
    tenant_id: str = "default"
    status: JobStatus
    tier: Tier
    total: int
    counts: dict[RequestState, int]
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    metadata: dict[str, Any]
    webhook_url: str | None = None
    completion_window: str | None = None
    expires_at: datetime | None = None
    created_at: datetime
    started_at: datetime | None = None
    finalizing_at: datetime | None = None
    completed_at: datetime | None = None
    eta_seconds: float | None = Field(
        default=None, description="time to finish at the rate observed since the job started")
    paused: str | None = Field(
        default=None, description="why the job's remaining requests wait: a spent budget whose "
                                  "policy is 'pause' (None: not paused)")

    @property
    def finished(self) -> int:
        """Requests in a terminal state."""
        return sum(self.counts.get(s, 0) for s in TERMINAL_REQUEST_STATES)

    @property
    def progress(self) -> float:
        """The share of requests finished, 0..1."""
        return self.finished / self.total if self.total else 1.0

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_JOB_STATUSES


class JobEnding(BaseModel):
    """A job's end as the commit that ended it wrote it: its status, counters and times.

    What a worker announces to the job's waiters (producers/endings.py), so that ``wait``
    returns the final view without reading the job again. No user content: the job's
    metadata and webhook URL stay in the database (DESIGN.md, invariant 2).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    status: JobStatus
    succeeded: int
    failed: int
    cancelled: int
    expired: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    started_at: datetime | None = None
    finalizing_at: datetime | None = None
    completed_at: datetime | None = None

    def view(self, seen: JobView) -> JobView:
        """``seen``, an earlier view of this job, as of this ending: what reading the job now
        returns (nothing of an ended job changes but what this carries; nothing runs or waits,
        so only the terminal states are counted)."""
        if seen.id != self.id:
            raise ValueError(f"the ending of {self.id} applied to a view of {seen.id}")
        counts = {RequestState.SUCCEEDED: self.succeeded, RequestState.FAILED: self.failed,
                  RequestState.CANCELLED: self.cancelled, RequestState.EXPIRED: self.expired}
        return seen.model_copy(update={
            "status": self.status, "counts": counts, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "cost": self.cost,
            "started_at": self.started_at, "finalizing_at": self.finalizing_at,
            "completed_at": self.completed_at, "eta_seconds": None, "paused": None})
