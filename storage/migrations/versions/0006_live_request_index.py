"""requests: the (job_id, state) index becomes (job_id, state, seq) over live rows only

A claim leases up to 64 rows of one job by primary key (``job_id = ? AND seq IN (...)``) among
those still runnable (queued, due deferrals, lapsed leases). When the planner thought a job
small (no statistics yet for a new job, or a table of many one-row realtime jobs), it read the
rows through ``(job_id, state)`` instead: every queued and running row of the job, filtered
by seq, so each claim cost time in proportion to the job's backlog. Measured on a
40,000-request job on PostgreSQL 15: 31,900 rows read and 1,900 buffers for a 64-row claim,
9-15 ms, against 64 rows, 870 buffers and 1.5-3.4 ms through the primary key.

The index now ends in ``seq``, so a plan through it looks up the claimed rows themselves. On
PostgreSQL it holds only live rows (queued, running, deferred): a finished row leaves it, so a
finish writes one index entry fewer. Queries read it with the state written into their SQL
(``storage.models.state_is``), which the partial predicate needs. On SQLite it holds every row:
SQLite uses a partial index only when the query repeats the index's WHERE term, and
``state = 'running'`` does not repeat ``state IN (...)`` (the status counts would read a whole
job instead).

On a large table the upgrade builds the new index (PostgreSQL takes a write lock on
``requests`` while it does); run it while the workers are stopped.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 09:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_LIVE = sa.text("state IN ('queued', 'running', 'deferred')")


def upgrade() -> None:
    op.create_index("ix_requests_job_live", "requests", ["job_id", "state", "seq"],
                    unique=False, postgresql_where=_LIVE)
    op.drop_index("ix_requests_job_state", table_name="requests")


def downgrade() -> None:
    op.create_index("ix_requests_job_state", "requests", ["job_id", "state"], unique=False)
    op.drop_index("ix_requests_job_live", table_name="requests")
