"""Tenants, their API keys and their limits: the shapes the CLI and the producer read.

A tenant owns jobs; an API key names its tenant. Keys look like ``bya_<id>_<secret>``: the
``bya_<id>`` part is public (it is what ``keys list`` shows and what ``keys revoke`` takes),
the whole key is shown once at creation and only its SHA-256 is stored.

With no key the caller is the built-in ``default`` tenant: that is the embedded, one-user
mode (the demo, tests, a laptop). A shared deployment sets ``BATCHYARD_REQUIRE_API_KEY=1`` so
a call without a key is refused.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.keys import tenant_key

__all__ = [
    "BUDGET_PAUSED",
    "DEFAULT_TENANT",
    "KEY_PREFIX",
    "Access",
    "ApiKeyView",
    "Budget",
    "Identity",
    "NewApiKey",
    "QuotaScope",
    "ScopeHistory",
    "TenantLimits",
    "TenantView",
    "valid_tenant_id",
]

DEFAULT_TENANT = "default"
"""The tenant of every call made without an API key (embedded mode) and of jobs stored before
tenants existed (migration 0003)."""
KEY_PREFIX = "bya_"
BUDGET_PAUSED = "budget_paused"
"""The error code a request waits under while its tenant's (or key's) budget, with policy
``pause``, is spent; ``status`` then shows the job as paused."""
_TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


def valid_tenant_id(value: str) -> str:
    """``value`` if it is a usable tenant id (lower-case letters, digits, ``-``, ``_``)."""
    if not _TENANT_ID.match(value):
        raise ValueError(f"tenant id {value!r}: use 1-40 of a-z, 0-9, '-', '_' "
                         "(starting with a letter or digit)")
    return value


class Budget(BaseModel):
    """A spend ceiling per period (USD), with a soft threshold that raises an alert first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: Annotated[Decimal, Field(gt=0, max_digits=18, decimal_places=6)]
    period: Literal["daily", "monthly", "rolling"] = "monthly"
    rolling_s: Annotated[float, Field(gt=0)] | None = None
    """The length of a ``rolling`` period, in seconds."""
    alert_at: Annotated[float, Field(gt=0, le=1)] = 0.8
    """The share of ``amount`` at which a ``budget.alert`` is raised (once per period)."""
    on_exceeded: Literal["fail", "pause"] = "fail"
    """Once spent: ``fail`` ends each remaining request as ``budget_exceeded``; ``pause`` keeps
    them waiting (the job shows ``paused``) until the next period or a raised budget."""


class TenantLimits(BaseModel):
    """A tenant's (or an API key's) limits; every field optional (``None``: no limit)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rpm: Annotated[int, Field(ge=1)] | None = None
    tpm: Annotated[int, Field(ge=1)] | None = None
    max_in_flight: Annotated[int, Field(ge=1)] | None = None
    max_queued: Annotated[int, Field(ge=1)] | None = None
    models: list[str] | None = None
    """The model names (or aliases) this tenant may use; ``None``: all."""
    budget: Budget | None = None
    limit_window_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    """The window ``rpm`` and ``tpm`` count over (60: per minute; shorter in tests)."""


class TenantView(BaseModel):
    """A tenant as ``tenants show`` prints it."""

    id: str
    name: str
    limits: TenantLimits = TenantLimits()
    created_at: datetime

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return valid_tenant_id(value)


class ApiKeyView(BaseModel):
    """A stored key: its public id and standing, never the secret."""

    id: str
    """The public part, ``bya_<8 hex>``."""
    tenant_id: str
    name: str
    limits: TenantLimits = TenantLimits()
    """The key's own limits, enforced on top of its tenant's (each call must fit both)."""
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class Identity(BaseModel):
    """Who is calling: a tenant, and the key it used (None: the keyless default tenant)."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str = DEFAULT_TENANT
    key_id: str | None = None


class Access(BaseModel):
    """A caller and the limits its submissions must fit: its tenant's, and its key's own."""

    model_config = ConfigDict(frozen=True)

    identity: Identity = Identity()
    tenant_limits: TenantLimits = TenantLimits()
    key_limits: TenantLimits = TenantLimits()


class QuotaScope(BaseModel):
    """One set of limits a call must fit: its tenant's, or its API key's own."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str
    key_id: str | None
    limits: TenantLimits

    @property
    def name(self) -> str:
        return f"API key {self.key_id!r}" if self.key_id else f"tenant {self.tenant_id!r}"

    def key(self, kind: str, period: str = "") -> str:
        return tenant_key(self.tenant_id, kind, period, api_key=self.key_id)


class ScopeHistory(BaseModel):
    """What the database knows of a scope: its spend between consecutive ``edges`` (epoch s),
    and its calls since a window ago (newest first: epoch s of the answer, or of now for a
    call still running, and the tokens used)."""

    spend: list[Decimal]
    calls: list[tuple[float, int]]


class NewApiKey(BaseModel):
    """A key just created: the only time its full secret is visible."""

    key: str
    view: ApiKeyView
