"""``batchyard webhooks``: list deliveries and their attempts, redeliver an event, make a secret."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING

import click

from schemas.settings import Settings
from schemas.webhooks import DeliveryView, new_secret

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["webhooks"]

def _engine(settings: Settings) -> Engine:
    from storage import ensure_schema, make_engine

    engine = make_engine(settings.database_url)
    ensure_schema(engine)
    return engine


@click.group()
def webhooks() -> None:
    """Webhook deliveries: what was sent where, every attempt, and redelivery."""


@webhooks.command("list")
@click.argument("job_id", required=False)
@click.option("--limit", default=50, show_default=True, help="Without JOB_ID: the latest N.")
@click.option("--json", "as_json", is_flag=True, help="Print deliveries and attempts as JSON.")
@click.pass_obj
def list_(settings: Settings, job_id: str | None, limit: int, as_json: bool) -> None:
    """List a job's webhook deliveries with every attempt (or the latest of all jobs)."""
    from storage.webhook_log import list_deliveries

    rows = list_deliveries(_engine(settings), job_id, limit=limit)
    if as_json:
        click.echo(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return
    if not rows:
        click.echo("no webhook deliveries" + (f" for {job_id}" if job_id else ""))
        return
    click.echo("\n".join(_lines(rows, attempts=job_id is not None)))


def _lines(rows: list[DeliveryView], *, attempts: bool) -> list[str]:
    """One line per delivery (plain text: any width, greppable), its attempts indented."""
    out: list[str] = []
    for r in rows:
        when = f"  next {_time(r.next_attempt_at)}" if r.next_attempt_at else ""
        last = f"  last {r.last_status or r.last_error}" if r.last_status or r.last_error else ""
        out.append(f"{r.event_id}  {r.event_type.value}  {r.job_id}  {r.state.value}  "
                   f"{r.attempts} attempt(s){last}{when}  {r.url}")
        for a in r.attempt_log if attempts else []:
            outcome = str(a.status_code) if a.status_code is not None else a.error or ""
            took = f"  {a.latency_ms:.0f} ms" if a.latency_ms is not None else ""
            excerpt = f"  {(a.response_excerpt or '')[:80]!r}" if a.response_excerpt else ""
            out.append(f"    attempt {a.attempt}  {_time(a.started_at)}  {outcome}{took}"
                       f"{excerpt}")
    return out


def _time(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


@webhooks.command()
@click.argument("event_id")
@click.option("--url", help="Send to this URL instead of the one the event went to.")
@click.pass_obj
def redeliver(settings: Settings, event_id: str, url: str | None) -> None:
    """Send EVENT_ID again (same webhook-id), re-enabling its endpoint if a 410 disabled it."""
    from schemas.destinations import check_destination
    from storage.events import redeliver as queue_again

    if url is not None:
        check_destination(url, settings.webhooks.allow)
    delivery = queue_again(_engine(settings), event_id, url)
    click.echo(f"queued delivery {delivery} of {event_id}; a worker sends it within "
               f"{settings.webhooks.poll_s:g}s")


@webhooks.command()
def secret() -> None:
    """Print a new signing secret (whsec_...).

    Put it in BATCHYARD_WEBHOOKS__SECRET on the workers and give it to the receiver. To
    rotate, list the new secret first and keep the old one ("whsec_new whsec_old"): both
    sign every delivery until the old one is removed.
    """
    click.echo(new_secret())
