"""How jobs look in a terminal (rich tables)."""

from __future__ import annotations

from rich.table import Table

from schemas.jobs import JobView, RequestState

__all__ = ["job_table"]


def job_table(job: JobView) -> Table:
    """A job's status as a two-column table."""
    table = Table(title=f"job {job.id}", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("status", job.status.value + (" (paused)" if job.paused else ""))
    if job.paused:
        table.add_row("paused", job.paused)
    table.add_row("tier", job.tier.value)
    table.add_row("progress", f"{job.finished}/{job.total} ({job.progress:.0%})")
    for state in RequestState:
        if job.counts.get(state):
            table.add_row(f"  {state.value}", str(job.counts[state]))
    table.add_row("tokens", f"{job.prompt_tokens} in / {job.completion_tokens} out")
    table.add_row("cost (USD)", f"{job.cost:.6f}")
    table.add_row("created", job.created_at.isoformat(timespec="seconds"))
    if job.started_at:
        table.add_row("started", job.started_at.isoformat(timespec="seconds"))
    if job.finalizing_at:
        table.add_row("finalizing", job.finalizing_at.isoformat(timespec="seconds"))
    if job.completed_at:
        table.add_row("completed", job.completed_at.isoformat(timespec="seconds"))
    if job.eta_seconds is not None:
        table.add_row("eta", _duration(job.eta_seconds))
    if job.expires_at and not job.done:
        table.add_row("expires", job.expires_at.isoformat(timespec="seconds"))
    if job.metadata:
        table.add_row("metadata", ", ".join(f"{k}={v}" for k, v in job.metadata.items()))
    return table


def _duration(seconds: float) -> str:
    """1h02m, 3m05s or 12s."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
