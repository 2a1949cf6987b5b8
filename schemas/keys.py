"""Every queue name and Redis key batchyard uses, in one place.

Queues are Celery queues on the Redis broker, one per priority tier. The other keys are
counters, locks and markers that live in Redis beside them; none holds user content.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "CHUNK_TASK",
    "ENDED_CHANNEL_PATTERN",
    "EPOCH_KEY",
    "KEY_PREFIX",
    "KOMBU_UNACKED_KEY",
    "RECONCILER_LOCK_KEY",
    "ROUTE_KINDS",
    "TENANT_KINDS",
    "TIER_ORDER",
    "Tier",
    "job_ended_channel",
    "job_of_ended_channel",
    "queue_name",
    "route_key",
    "tenant_key",
]

KEY_PREFIX = "batchyard"
CHUNK_TASK = "batchyard.run_chunk"
EPOCH_KEY = f"{KEY_PREFIX}:epoch"
RECONCILER_LOCK_KEY = f"{KEY_PREFIX}:lock:reconciler"
KOMBU_UNACKED_KEY = "unacked"
"""kombu's (default) hash of messages delivered but not yet acknowledged: tag -> [message,
exchange, routing key]. Read, never written, by the reconciler's stranded-row rule."""


class Tier(StrEnum):
    """Priority tiers; a worker always drains a higher tier before a lower one."""

    REALTIME = "realtime"
    HIGH = "high"
    STANDARD = "standard"
    BULK = "bulk"


TIER_ORDER: tuple[Tier, ...] = (Tier.REALTIME, Tier.HIGH, Tier.STANDARD, Tier.BULK)


ROUTE_KINDS = ("window", "tokens", "health", "slots", "seeded")
"""Shared routing state per deployment: ``window`` (a sorted set of admitted calls),
``tokens`` (their token sum), ``health`` (a hash: breaker, cooldown, latency average),
``slots`` (the next start time handed to a request that waits for capacity) and ``seeded``
(set once ``window`` holds what the database knew after Redis lost its data)."""


def route_key(deployment: str, kind: str) -> str:
    """The Redis key of one part of a deployment's shared routing state (``ROUTE_KINDS``)."""
    if kind not in ROUTE_KINDS:
        raise ValueError(f"unknown routing state {kind!r}")
    return f"{KEY_PREFIX}:route:{deployment}:{kind}"


def job_ended_channel(job_id: str) -> str:
    """The pub/sub channel on which a job's ending is announced (producers/endings.py)."""
    return f"{KEY_PREFIX}:job:{job_id}:ended"


ENDED_CHANNEL_PATTERN = job_ended_channel("*")
"""Every job's ending channel, as a PSUBSCRIBE pattern (job ids hold no glob characters)."""


def job_of_ended_channel(channel: str) -> str | None:
    """The job id of an ending channel (``job_ended_channel``'s inverse); None for another."""
    head, tail = job_ended_channel("|").split("|")
    if channel.startswith(head) and channel.endswith(tail) and len(channel) > len(head + tail):
        return channel[len(head):-len(tail)]
    return None


def queue_name(tier: Tier | str) -> str:
    """The Celery queue that carries a tier's chunks."""
    return f"{KEY_PREFIX}.{Tier(tier).value}"


TENANT_KINDS = ("calls", "held", "spend", "seeded", "alert", "alerts", "paused", "probe")
"""Shared quota state per tenant (and per API key with limits of its own): ``calls`` (a
sorted set of admitted calls: rpm, tpm), ``held`` (a hash of in-flight reservations),
``spend`` (spend in the current budget period, suffixed with the period), ``seeded`` (set
once ``spend`` or ``calls`` holds what the database knew: suffixed with the period, or
``calls``), ``paused`` (requests sleep on a spent budget), ``probe`` (one of them looks again
soon), ``alert`` (set once a period's soft threshold is crossed, suffixed likewise) and
``alerts`` (a stream of budget alert events)."""


def tenant_key(tenant: str, kind: str, period: str = "", *,
               api_key: str | None = None) -> str:
    """The Redis key of one part of a tenant's (or one of its API keys') quota state
    (``TENANT_KINDS``)."""
    if kind not in TENANT_KINDS:
        raise ValueError(f"unknown tenant state {kind!r}")
    scope = f"{tenant}:key:{api_key}" if api_key else tenant
    return f"{KEY_PREFIX}:tenant:{scope}:{kind}" + (f":{period}" if period else "")
