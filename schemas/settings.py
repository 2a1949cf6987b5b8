"""Settings: one pydantic-settings object, built once at each entry point and passed down.

Environment: ``DATABASE_URL``, ``REDIS_URL``, ``BATCHYARD_CONFIG`` (the routing catalog), and
``BATCHYARD_<GROUP>__<FIELD>`` for the nested groups, e.g. ``BATCHYARD_WORKER__MAX_IN_FLIGHT=512``.
This is the only module that reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.keys import Tier
from schemas.webhooks import WebhookSettings

__all__ = [
    "DEFAULT_CATALOG",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_REDIS_URL",
    "ProducerSettings",
    "Settings",
    "UpstreamSettings",
    "WebhookSettings",
    "WorkerSettings",
    "read_secret",
]

DEFAULT_DATABASE_URL = "sqlite:///var/batchyard.db"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_CATALOG = Path("batchyard.yaml")

DEFAULT_CHUNK_SIZES = {Tier.REALTIME: 1, Tier.HIGH: 16, Tier.STANDARD: 64, Tier.BULK: 64}


class WorkerSettings(BaseModel):
    """How a worker process takes and runs work."""

    tiers: list[Tier] = list(Tier)
    feeders: int = Field(default=4, ge=1, le=64, description="Celery threads that take chunks")
    max_in_flight: int = Field(default=512, ge=1, le=10_000, description="upstream calls at once")
    max_attempts: int = Field(default=5, ge=1, le=50)
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    lease_s: float = Field(default=300.0, gt=0, description="a claimed request's lease")
    visibility_timeout_s: float = Field(
        default=300.0, gt=0,
        description="a chunk taken but not acknowledged (its worker died) is redelivered after",
    )
    reconcile_interval_s: float = Field(default=2.0, gt=0)
    dispatch_grace_s: float = Field(default=30.0, gt=0, description="unpublished job age to repair")
    write_batch: int = Field(default=256, ge=1)
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    direct_connections: bool = Field(
        default=True,
        description="PostgreSQL: the feeders claim rows on a connection of their own each, "
                    "and the event loop writes a realtime or high result itself on another, "
                    "without SQLAlchemy's engine (about 1 ms less per realtime request here); "
                    "off, every statement goes through the engine's pool",
    )
    budget_recheck_s: float = Field(
        default=60.0, gt=0,
        description="one request paused by a spent budget looks again this often (a raised "
                    "budget then wakes the others)",
    )
    task_events: bool = Field(
        default=False,
        description="send Celery task events from the start; off, they start when a monitor "
                    "asks (Flower does every 5 s), so nobody pays for them unwatched",
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop",
        description="the engine's event loop: uvloop (libuv) spends 10-15% less of the worker's "
                    "CPU per call than asyncio's own; asyncio is the fallback where uvloop "
                    "is not installed (Windows)",
    )


class UpstreamSettings(BaseModel):
    """The one pooled HTTP client every upstream call goes through."""

    timeout_s: float = Field(default=120.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=1024, ge=1)


class ProducerSettings(BaseModel):
    """How the producer cuts a job into queue messages."""

    chunk_sizes: dict[Tier, int] = dict(DEFAULT_CHUNK_SIZES)
    insert_batch: int = Field(default=5_000, ge=1)
    max_line_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_problems: int = Field(default=100, ge=1)
    wait_outage_s: float = Field(
        default=300.0, gt=0,
        description="`wait` rides out a database outage this long (or its timeout) before failing",
    )
    direct_connections: bool = Field(
        default=True,
        description="PostgreSQL: a job that fits one insert batch is written, and a job's "
                    "status read, on the calling thread's own connection, without "
                    "SQLAlchemy's engine (0.7 ms less per insert, 0.1 ms per read here); "
                    "off, through the engine's pool",
    )


class Settings(BaseSettings):
    """Everything configurable, from the environment (and a ``.env`` file)."""

    model_config = SettingsConfigDict(
        env_prefix="BATCHYARD_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices("DATABASE_URL", "BATCHYARD_DATABASE_URL"),
    )
    redis_url: str = Field(
        default=DEFAULT_REDIS_URL, validation_alias=AliasChoices("REDIS_URL", "BATCHYARD_REDIS_URL")
    )
    config: Path = Field(
        default=DEFAULT_CATALOG, validation_alias=AliasChoices("BATCHYARD_CONFIG", "config")
    )
    worker: WorkerSettings = WorkerSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    producer: ProducerSettings = ProducerSettings()
    webhooks: WebhookSettings = WebhookSettings()
    tiktoken_cache_dir: Path | None = Field(
        default=None, validation_alias=AliasChoices("TIKTOKEN_CACHE_DIR", "tiktoken_cache_dir"),
        description="TIKTOKEN_CACHE_DIR: pre-seeded tiktoken encoding files for token estimates "
        "(never downloaded; without them, estimates use 4 characters per token)",
    )
    api_key: SecretStr | None = Field(
        default=None, description="BATCHYARD_API_KEY: the caller's key (none: the default tenant)")
    require_api_key: bool = Field(
        default=False, description="BATCHYARD_REQUIRE_API_KEY: refuse calls without a key")


def read_secret(env_name: str) -> str | None:
    """The value of a credential's environment variable (the catalog names it, never holds it)."""
    return os.environ.get(env_name)
