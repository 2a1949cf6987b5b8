"""Webhooks: event and delivery vocabularies, the event body, Standard Webhooks signing.

A job's webhook receives ``job.completed``, ``job.failed``, ``job.cancelled``, ``job.expired``
and (when enabled) throttled ``job.progress`` events. Every POST is signed per the Standard
Webhooks specification (https://www.standardwebhooks.com):

    webhook-id:        the event id; the same on every attempt, so receivers can dedupe
    webhook-timestamp: integer seconds since the epoch, of this attempt
    webhook-signature: "v1," + base64(HMAC-SHA256(secret, f"{id}.{timestamp}.{body}")),
                       one per configured secret, space-separated (rotation: old and new)

A secret is ``whsec_`` + base64 of random bytes (``batchyard webhooks secret`` makes one).
Receivers verify with ``verify`` below or with the ``standardwebhooks`` package; both accept
each other's output. This module is pure (no I/O) so a receiver can copy it whole.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from ipaddress import ip_network
from typing import Annotated, Any

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from schemas.errors import GatewayError
from schemas.jobs import JobStatus

__all__ = [
    "DEFAULT_RETRY_SCHEDULE_S",
    "SECRET_PREFIX",
    "TERMINAL_EVENTS",
    "AttemptView",
    "DeliveryState",
    "DeliveryView",
    "EventResults",
    "EventType",
    "JobEventData",
    "RequestCounts",
    "SignatureError",
    "WebhookEvent",
    "WebhookSettings",
    "decode_secret",
    "new_secret",
    "sign",
    "signature_header",
    "verify",
]

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
DEFAULT_TOLERANCE_S = 300.0
"""How far a webhook-timestamp may be from the receiver's clock (replay protection)."""
DEFAULT_RETRY_SCHEDULE_S = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0,
                            86400.0)
"""Waits before attempts 2..10 (the first is immediate): the Standard Webhooks schedule."""


def _words(value: Any) -> Any:
    """Env values: a JSON list, or words separated by spaces or commas."""
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            return json.loads(value)
        return value.replace(",", " ").split()
    return value


class WebhookSettings(BaseModel):
    """Outbound webhooks (``BATCHYARD_WEBHOOKS__<FIELD>``)."""

    secret: Annotated[list[SecretStr], NoDecode] = Field(
        default=[], description="signing secrets, newest first; every one signs (rotation)")
    allow: Annotated[list[str], NoDecode] = Field(
        default=[], description="hosts or CIDRs allowed despite being private/loopback")
    retry_schedule_s: list[float] = Field(default=list(DEFAULT_RETRY_SCHEDULE_S),
                                          description="waits between attempts; len + 1 tries")
    jitter: float = Field(default=0.1, ge=0, lt=1, description="each wait varies by ± this share")
    max_retry_after_s: float = Field(default=86400.0, ge=0, description="cap on Retry-After")
    timeout_s: float = Field(default=15.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    poll_s: float = Field(default=1.0, gt=0, description="how often a worker looks for due work")
    lease_s: float = Field(default=120.0, gt=0, description="a claimed delivery's lease")
    concurrency: int = Field(default=8, ge=1, le=256, description="POSTs at once per worker")
    progress_interval_s: float = Field(default=0.0, ge=0, description="job.progress; 0 = off")
    results_url: str | None = Field(default=None, description="e.g. https://h/jobs/{job_id}")

    @field_validator("secret", "allow", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _words(value)

    @field_validator("secret")
    @classmethod
    def _secrets(cls, value: list[SecretStr]) -> list[SecretStr]:
        for item in value:
            decode_secret(item.get_secret_value())
        return value

    @field_validator("allow")
    @classmethod
    def _allow(cls, value: list[str]) -> list[str]:
        for item in value:
            if "/" in item:
                ip_network(item, strict=False)  # ValueError names the bad entry
        return [item.lower() for item in value]

    def signing_secrets(self) -> list[str]:
        return [s.get_secret_value() for s in self.secret]


class EventType(StrEnum):
    """What happened to a job."""

    COMPLETED = "job.completed"
    FAILED = "job.failed"
    CANCELLED = "job.cancelled"
    EXPIRED = "job.expired"
    PROGRESS = "job.progress"


TERMINAL_EVENTS: dict[JobStatus, EventType] = {
    JobStatus.COMPLETED: EventType.COMPLETED,
    JobStatus.FAILED: EventType.FAILED,
    JobStatus.CANCELLED: EventType.CANCELLED,
    JobStatus.EXPIRED: EventType.EXPIRED,
}


class DeliveryState(StrEnum):
    """One event's delivery to one endpoint.

    pending → delivering → succeeded | pending (retry later) | failed (schedule exhausted)
    | disabled (the endpoint answered 410 Gone, or had before).
    """

    PENDING = "pending"
    DELIVERING = "delivering"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DISABLED = "disabled"


class RequestCounts(BaseModel):
    """A job's requests per outcome when the event was written."""

    total: int
    succeeded: int
    failed: int
    cancelled: int
    expired: int


class EventResults(BaseModel):
    """Where the results are: lines in each file, the command that exports them, a URL if
    the operator configured ``BATCHYARD_WEBHOOKS__RESULTS_URL``."""

    output_lines: int
    error_lines: int
    command: str
    url: str | None = None


class JobEventData(BaseModel):
    """The ``data`` of a job event: the job's status, counts, totals and results location.

    Stored with the event when it is written; unknown keys are ignored so events written by
    an older or newer version still send."""

    id: str
    object: str = "batch"
    status: JobStatus
    tier: str
    request_counts: RequestCounts
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal
    metadata: dict[str, Any] = {}
    created_at: datetime
    started_at: datetime | None = None
    finalizing_at: datetime | None = None
    completed_at: datetime | None = None
    expires_at: datetime | None = None
    results: EventResults


class WebhookEvent(BaseModel):
    """The body of every POST, in the Standard Webhooks shape ``{type, timestamp, data}``."""

    type: EventType
    timestamp: datetime
    data: JobEventData


class AttemptView(BaseModel):
    """One recorded POST of a delivery."""

    attempt: int
    started_at: datetime
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    response_excerpt: str | None = None


class DeliveryView(BaseModel):
    """What ``batchyard webhooks list`` shows for one event sent to one URL."""

    id: int
    event_id: str
    event_type: EventType
    job_id: str
    url: str
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    attempt_log: list[AttemptView] = []


class SignatureError(GatewayError):
    """A webhook's signature headers are missing, stale, or match none of the secrets."""

    code = "invalid_signature"


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def decode_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_…`` secret; ValueError when it is not one."""
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from exc
    if len(key) < 16:
        raise ValueError("a webhook secret needs at least 16 bytes of key")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """One ``v1,<base64>`` signature of ``body`` for the given id and timestamp."""
    content = f"{msg_id}.{timestamp}.{body}".encode()
    digest = hmac.new(decode_secret(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_: Sequence[str], msg_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` value: one signature per secret, space-separated."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets_)


def verify(secret: str | Sequence[str], body: bytes | str, headers: Mapping[str, str], *,
           tolerance_s: float = DEFAULT_TOLERANCE_S, now: float | None = None) -> Any:
    """Check a received webhook and return its parsed JSON body; SignatureError otherwise.

    ``secret`` may be several (during a rotation). ``headers`` is matched case-insensitively.
    """
    text = body.decode() if isinstance(body, bytes) else body
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, given = (lower.get("webhook-id"), lower.get("webhook-timestamp"),
                            lower.get("webhook-signature"))
    if not (msg_id and stamp and given):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise SignatureError(f"webhook-timestamp {stamp!r} is not an integer") from None
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        raise SignatureError("webhook-timestamp is outside the tolerance (replay?)")
    keys = [secret] if isinstance(secret, str) else list(secret)
    expected = {sign(k, msg_id, timestamp, text).encode() for k in keys}
    for candidate in given.split():
        if any(hmac.compare_digest(candidate.encode(), e) for e in expected):
            return json.loads(text)
    raise SignatureError("no signature matches the secret(s)")
