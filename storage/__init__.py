"""The database: SQLAlchemy tables, engines, Alembic migrations and every query we run."""

from __future__ import annotations

from storage.db import make_engine
from storage.jobs import (
    NewJob,
    NewRequest,
    cancel_job,
    create_job,
    get_job,
    iter_results,
    mark_dispatched,
)
from storage.migrate import ensure_schema, upgrade
from storage.outage import database_errors
from storage.requests import claim, finalize_job, record

__all__ = [
    "NewJob",
    "NewRequest",
    "cancel_job",
    "claim",
    "create_job",
    "database_errors",
    "ensure_schema",
    "finalize_job",
    "get_job",
    "iter_results",
    "make_engine",
    "mark_dispatched",
    "record",
    "upgrade",
]
