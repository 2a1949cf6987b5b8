"""The tables: jobs and their requests. The database is the source of truth."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import cast

from sqlalchemy import (
    JSON,
    ColumnElement,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    literal_column,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from schemas.jobs import RequestState
from schemas.tenants import DEFAULT_TENANT
from storage.money import Money

__all__ = [
    "API_KEYS",
    "ATTEMPTS",
    "DELIVERIES",
    "ENDPOINTS",
    "EVENTS",
    "JOBS",
    "REQUESTS",
    "TENANTS",
    "ApiKeyRow",
    "Base",
    "DeliveryAttemptRow",
    "DeliveryRow",
    "EndpointRow",
    "EventRow",
    "JobRow",
    "RequestRow",
    "TenantRow",
    "state_in",
    "state_is",
]


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    """A submitted batch; its counters and totals move in the same transaction as its requests."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True,
                                           default=DEFAULT_TENANT, server_default=DEFAULT_TENANT)
    api_key_id: Mapped[str | None] = mapped_column(String(40), index=True,
                                                   doc="the key that submitted it (None: no key)")
    status: Mapped[str] = mapped_column(String(16), index=True)
    tier: Mapped[str] = mapped_column(String(16))
    total: Mapped[int] = mapped_column(Integer)
    succeeded: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    cancelled: Mapped[int] = mapped_column(Integer, default=0)
    expired: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    metadata_: Mapped[dict[str, object]] = mapped_column("metadata", JSON, default=dict)
    input_name: Mapped[str] = mapped_column(String(512), default="")
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    completion_window: Mapped[str | None] = mapped_column(String(16))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    routing: Mapped[dict[str, object] | None] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finalizing_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


DEFERRED_ONLY = f"state = '{RequestState.DEFERRED.value}'"
RUNNING_ONLY = f"state = '{RequestState.RUNNING.value}'"
LIVE_ONLY = (f"state IN ('{RequestState.QUEUED.value}', '{RequestState.RUNNING.value}', "
             f"'{RequestState.DEFERRED.value}')")
FINISHED_ONLY = "finished_at IS NOT NULL"
"""The predicates of the partial indexes on requests. A query uses such an index only if its
WHERE clause implies the predicate when planned: a state must be written into the SQL there
(``state_is``), not sent as a bound parameter; any comparison of ``finished_at`` implies the
last."""


def _partial(name: str, where: str, *columns: str) -> Index:
    return Index(name, *columns, postgresql_where=text(where), sqlite_where=text(where))


class RequestRow(Base):
    """One line of a job: its body, its state, and once done its result, usage and cost."""

    __tablename__ = "requests"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    custom_id: Mapped[str] = mapped_column(String(512))
    model: Mapped[str] = mapped_column(String(256))
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claim: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[float | None] = mapped_column(Float, doc="epoch s; a claim's end")
    not_before: Mapped[float | None] = mapped_column(Float, doc="epoch s; a deferral's end")
    deployment: Mapped[str | None] = mapped_column(String(128))
    provider: Mapped[str | None] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer)
    upstream_request_id: Mapped[str | None] = mapped_column(String(128))
    response: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    route: Mapped[str | None] = mapped_column(Text, doc="JSON: deployments tried, fallbacks")
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    # Partial indexes (migrations 0005, 0006): PostgreSQL writes a new entry in every index of
    # the table on each claim and each finish (the state changes, so no update is HOT), so the
    # reconciler's and the reports' indexes hold only the rows they look for.
    # ix_requests_job_live ends in seq so that no plan through it can read a whole job's
    # backlog to claim 64 of its rows; it is partial on PostgreSQL only (see migration 0006).
    __table_args__ = (
        Index("ix_requests_job_live", "job_id", "state", "seq",
              postgresql_where=text(LIVE_ONLY)),
        _partial("ix_requests_deferred_due", DEFERRED_ONLY, "not_before"),
        _partial("ix_requests_running_lease", RUNNING_ONLY, "lease_until"),
        _partial("ix_requests_job_finished", FINISHED_ONLY, "job_id", "finished_at", "seq"),
        _partial("ix_requests_finished", FINISHED_ONLY, "finished_at"),
    )


class TenantRow(Base):
    """Who owns jobs; ``limits`` is a ``schemas.tenants.TenantLimits`` as JSON."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    limits: Mapped[dict[str, object] | None] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiKeyRow(Base):
    """An API key: its public id, the SHA-256 of the whole key, its own limits, and whether it
    was revoked."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, doc="bya_<8 hex>, public")
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    secret_hash: Mapped[str] = mapped_column(String(64), doc="hex SHA-256 of the whole key")
    limits: Mapped[dict[str, object] | None] = mapped_column(
        JSON(none_as_null=True), doc="the key's own TenantLimits, on top of its tenant's")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class EventRow(Base):
    """The outbox: a job event, written in the transaction that caused it (exactly once)."""

    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, doc="the webhook-id")
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, object] | None] = mapped_column(
        JSON, nullable=False,
        doc="the event's data; JSON null for a terminal event whose data is its job's final "
            "row (storage.events.event_data builds it)")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DeliveryRow(Base):
    """One event's delivery to one URL: leased like a request, retried on a schedule."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float | None] = mapped_column(Float, doc="epoch s; when due")
    claim: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[float | None] = mapped_column(Float, doc="epoch s; a claim's end")
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_deliveries_state_next", "state", "next_attempt_at"),
    )


class DeliveryAttemptRow(Base):
    """One POST of a delivery: what came back, how long it took."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text, doc="transport error or refusal")
    response_excerpt: Mapped[str | None] = mapped_column(Text, doc="the first 1 KB")


class EndpointRow(Base):
    """A webhook URL's standing: disabled once it answered 410 Gone, until redelivered."""

    __tablename__ = "webhook_endpoints"

    url: Mapped[str] = mapped_column(String(2048), primary_key=True)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str | None] = mapped_column(Text)


JOBS = cast(Table, JobRow.__table__)
REQUESTS = cast(Table, RequestRow.__table__)
EVENTS = cast(Table, EventRow.__table__)
DELIVERIES = cast(Table, DeliveryRow.__table__)
ATTEMPTS = cast(Table, DeliveryAttemptRow.__table__)
ENDPOINTS = cast(Table, EndpointRow.__table__)
TENANTS = cast(Table, TenantRow.__table__)
API_KEYS = cast(Table, ApiKeyRow.__table__)


def state_is(state: RequestState) -> ColumnElement[bool]:
    """``requests.state = '<state>'`` with the value in the SQL, so the planner can use the
    partial index on that state (a bound parameter hides the value from it)."""
    return REQUESTS.c.state == literal_column(f"'{state.value}'")


def state_in(*states: RequestState) -> ColumnElement[bool]:
    """``requests.state IN ('<state>', ...)``, the values in the SQL (as ``state_is``)."""
    return REQUESTS.c.state.in_([literal_column(f"'{state.value}'") for state in states])
