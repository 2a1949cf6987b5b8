"""events: a terminal event may store JSON null, its data being its job's final row

No table changes: this revision marks a change of what the rows may hold. On PostgreSQL a
worker's write ends jobs and inserts their terminal events in one statement
(``storage.batched.finish_and_count``), and such an event's ``payload`` is JSON ``null``: its
data is built from the job's row when it is read (``storage.events.event_data``), a row that
no longer changes once the job ended. A worker from before this revision would fail on such
an event when it leases its webhook delivery, so upgrade with every worker stopped, as for
0005 and 0006; ``batchyard worker`` refuses to start on a database not at its revision, which
keeps an older worker from starting against the upgraded database.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 17:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change in the tables (see the module's docstring)."""


def downgrade() -> None:
    """Store the data of every terminal event that has none (built from its job's row, as it
    is read), so that a worker of 0006 can deliver it."""
    from storage.events import event_data
    from storage.models import EVENTS

    conn = op.get_bind()
    missing = (sa.select(EVENTS.c.id, EVENTS.c.job_id, EVENTS.c.payload)
               .where(sa.cast(EVENTS.c.payload, sa.Text) == "null")
               .order_by(EVENTS.c.id).limit(_BATCH))
    while rows := conn.execute(missing).all():
        for row, data in zip(rows, event_data(conn, rows), strict=True):
            conn.execute(sa.update(EVENTS).where(EVENTS.c.id == row.id).values(payload=data))


_BATCH = 1000
