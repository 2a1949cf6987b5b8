"""partial indexes on requests: the reconciler's and the reports' indexes hold only their rows

Every claim and every finish changes a request's state, so PostgreSQL cannot update the row in
place (no HOT update) and writes a new entry in each of the table's indexes. The indexes the
reconciler reads (due deferrals, lapsed leases) and those of results and reports (finished
rows) now hold only the rows they are read for: a claim writes 3 index entries instead of 6,
a finish 4, an insert 2.

On a large table the upgrade rebuilds four indexes (PostgreSQL takes a write lock on
``requests`` while it does); run it while the workers are stopped.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 03:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_DEFERRED = sa.text("state = 'deferred'")
_RUNNING = sa.text("state = 'running'")
_FINISHED = sa.text("finished_at IS NOT NULL")


def _partial(name: str, columns: list[str], where: sa.TextClause) -> None:
    op.create_index(
        name, "requests", columns, unique=False, postgresql_where=where, sqlite_where=where
    )


def upgrade() -> None:
    op.drop_index("ix_requests_state_not_before", table_name="requests")
    op.drop_index("ix_requests_state_lease", table_name="requests")
    op.drop_index("ix_requests_job_finished", table_name="requests")
    op.drop_index("ix_requests_finished", table_name="requests")
    _partial("ix_requests_deferred_due", ["not_before"], _DEFERRED)
    _partial("ix_requests_running_lease", ["lease_until"], _RUNNING)
    _partial("ix_requests_job_finished", ["job_id", "finished_at", "seq"], _FINISHED)
    _partial("ix_requests_finished", ["finished_at"], _FINISHED)


def downgrade() -> None:
    op.drop_index("ix_requests_finished", table_name="requests")
    op.drop_index("ix_requests_job_finished", table_name="requests")
    op.drop_index("ix_requests_running_lease", table_name="requests")
    op.drop_index("ix_requests_deferred_due", table_name="requests")
    op.create_index("ix_requests_finished", "requests", ["finished_at"], unique=False)
    op.create_index(
        "ix_requests_job_finished", "requests", ["job_id", "finished_at", "seq"], unique=False
    )
    op.create_index("ix_requests_state_lease", "requests", ["state", "lease_until"], unique=False)
    op.create_index(
        "ix_requests_state_not_before", "requests", ["state", "not_before"], unique=False
    )
