"""The audit of a finished job: what a user can check, and every promise it finds broken."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, select

from schemas.jobs import JobStatus, RequestState
from storage import get_job, iter_results
from storage import models as _models

__all__ = ["Audit", "audit_job"]


@dataclass
class Audit:
    """What a user can check once a job ended; ``problems()`` names every broken promise."""

    status: str
    expected: int
    lines: int
    distinct: int
    missing: int
    succeeded: int
    failed: int
    cost_records: int
    job_counts: tuple[int, int]
    row_counts: tuple[int, int]
    job_totals: tuple[int, int, Decimal]
    row_totals: tuple[int, int, Decimal]
    terminal_events: int | None
    errors: dict[str, int] = field(default_factory=dict)
    missing_sample: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return self.lines - self.distinct

    def problems(self) -> list[str]:
        checks = [
            (self.status == JobStatus.COMPLETED, f"job status {self.status}"),
            (self.lines == self.expected, f"{self.lines} output lines for {self.expected}"),
            (self.duplicates == 0, f"{self.duplicates} duplicate custom_ids"),
            (self.missing == 0, f"{self.missing} custom_ids missing"),
            (self.cost_records == self.succeeded,
             f"{self.cost_records} cost records for {self.succeeded} successes"),
            (self.job_counts == self.row_counts,
             f"job counts {self.job_counts} != requests {self.row_counts}"),
            (self.job_totals == self.row_totals,
             f"job totals {self.job_totals} != sum of requests {self.row_totals}"),
            (self.terminal_events in (None, 1), f"{self.terminal_events} terminal job events"),
        ]
        return [message for ok, message in checks if not ok]

    def lines_of_report(self) -> list[str]:
        totals_ok = self.job_totals == self.row_totals and self.job_counts == self.row_counts
        return [
            f"job status           {self.status}",
            f"output lines         {self.lines} (expected {self.expected})",
            f"distinct custom_ids  {self.distinct}   duplicates {self.duplicates}   "
            f"missing {self.missing} {self.missing_sample or ''}",
            f"succeeded / failed   {self.succeeded} / {self.failed}   errors {self.errors}",
            f"cost records         {self.cost_records} (one per success: "
            f"{self.cost_records == self.succeeded})",
            f"job totals           tokens {self.job_totals[0]}+{self.job_totals[1]}, "
            f"${self.job_totals[2]}",
            f"sum of requests      tokens {self.row_totals[0]}+{self.row_totals[1]}, "
            f"${self.row_totals[2]}   equal: {totals_ok}",
            f"terminal job events  {self.terminal_events}",
        ]


def audit_job(engine: Engine, job_id: str, expected_ids: Sequence[str]) -> Audit:
    """Read the job back: its output lines, its request rows and its own counters."""
    seen: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    succeeded = 0
    for line in iter_results(engine, job_id):
        seen[line.custom_id] += 1
        if line.error is None:
            succeeded += 1
        else:
            errors[line.error.code] += 1
    missing = set(expected_ids) - set(seen)
    job = get_job(engine, job_id)
    t = _models.REQUESTS
    with engine.connect() as conn:
        mine = t.c.job_id == job_id
        cost_records = conn.execute(select(func.count()).where(
            mine, t.c.state == RequestState.SUCCEEDED, t.c.cost > 0)).scalar_one()
        by_state: dict[str, int] = dict(conn.execute(select(t.c.state, func.count()).where(mine)
                                     .group_by(t.c.state)).all())
        prompt, completion = conn.execute(select(
            func.coalesce(func.sum(t.c.prompt_tokens), 0),
            func.coalesce(func.sum(t.c.completion_tokens), 0)).where(mine)).one()
        costs = conn.execute(select(t.c.cost).where(mine, t.c.cost != 0)).scalars()
        row_cost = sum(costs, Decimal(0))
        events = _terminal_events(conn, job_id)
    return Audit(
        status=job.status.value, expected=len(expected_ids), lines=sum(seen.values()),
        distinct=len(seen), missing=len(missing), missing_sample=sorted(missing)[:5],
        succeeded=succeeded,
        failed=sum(errors.values()), cost_records=cost_records,
        job_counts=(job.counts.get(RequestState.SUCCEEDED, 0),
                    job.counts.get(RequestState.FAILED, 0)),
        row_counts=(by_state.get(RequestState.SUCCEEDED, 0),
                    by_state.get(RequestState.FAILED, 0)),
        job_totals=(job.prompt_tokens, job.completion_tokens, job.cost),
        row_totals=(int(prompt), int(completion), row_cost),
        terminal_events=events, errors=dict(errors),
    )


def _terminal_events(conn: Any, job_id: str) -> int | None:
    """Terminal events recorded for the job (None where the events table does not exist)."""
    events = getattr(_models, "EVENTS", None)
    if events is None:
        return None
    return int(conn.execute(select(func.count()).where(
        events.c.job_id == job_id, events.c.type != "job.progress")).scalar_one())

