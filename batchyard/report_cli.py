"""``batchyard report``: spend, tokens and counts; latency and error rate per deployment.

With an API key (``--api-key`` / BATCHYARD_API_KEY) the report covers the key's tenant only,
and naming another tenant or another tenant's job is answered "not found". Without a key it is
the operator's report over every tenant (it needs DATABASE_URL, like ``tenants`` and ``keys``),
unless BATCHYARD_REQUIRE_API_KEY=1, which makes the key mandatory here too.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from schemas.errors import ConfigError, NotFoundError
from schemas.settings import Settings
from storage.reports import DeploymentStats, ReportFilter, SpendRow

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["report", "scope"]

console = Console()
_TIME_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"]


def scope(settings: Settings, engine: Engine, tenant: str | None, job_id: str | None) -> str | None:
    """The tenant a report may cover: the key's own (another is "not found"), or with no key
    the operator's choice (None: all)."""
    from producers.auth import Caller
    from storage import get_job

    if settings.api_key is not None or settings.require_api_key:
        own = Caller(engine, settings.api_key, settings.require_api_key).tenant()
        if tenant is not None and tenant != own:
            raise NotFoundError(f"no tenant {tenant!r}")
        tenant = own
    if job_id is not None:
        get_job(engine, job_id, tenant=tenant)  # NotFoundError, foreign or absent alike
    return tenant


@click.command()
@click.option("--since", type=click.DateTime(_TIME_FORMATS), help="From (UTC), e.g. 2026-11-01.")
@click.option("--until", type=click.DateTime(_TIME_FORMATS), help="Until, exclusive (UTC).")
@click.option("--tenant", help="Only this tenant (with a key: must be the key's own).")
@click.option("--job", "job_id", help="Only this job.")
@click.option("--bucket", type=click.Choice(["day", "hour"]), default="day", show_default=True,
              help="The period spend is grouped by.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.option("--deployments", "deployments_csv", is_flag=True,
              help="With --format csv: the latency/error rows instead of the spend rows.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Draw spend over time per model to this PNG (needs batchyard[plot]).")
@click.pass_obj
def report(settings: Settings, /, fmt: str, deployments_csv: bool, plot: Path | None,
           **which: Any) -> None:
    """Spend, tokens and request counts by tenant, model, deployment, provider and day;
    latency p50/p95/p99 and error rate per deployment."""
    from storage import database_errors, ensure_schema, make_engine
    from storage.reports import deployment_stats, spend

    engine = make_engine(settings.database_url)
    with database_errors(engine, "no report was made"):
        ensure_schema(engine)
        flt = ReportFilter(since=_utc(which["since"]), until=_utc(which["until"]),
                           job_id=which["job_id"],
                           tenant=scope(settings, engine, which["tenant"], which["job_id"]))
        rows = spend(engine, flt, "hour" if which["bucket"] == "hour" else "day")
        stats = deployment_stats(engine, flt)
    if fmt == "json":
        click.echo(json.dumps(_json(flt, rows, stats), indent=2, default=str))
    elif fmt == "csv":
        _csv([asdict(s) | {"error_rate": round(s.error_rate, 6)} for s in stats]
             if deployments_csv else [asdict(r) for r in rows])
    else:
        console.print(_spend_table(rows))
        console.print(_stats_table(stats))
    if plot is not None:
        from batchyard.report_plot import plot_spend

        plot_spend(rows, plot)
        click.echo(f"wrote {plot}", err=True)
    engine.dispose()


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def _totals(rows: list[SpendRow]) -> dict[str, Any]:
    return {"requests": sum(r.requests for r in rows),
            "succeeded": sum(r.succeeded for r in rows),
            "failed": sum(r.failed for r in rows),
            "prompt_tokens": sum(r.prompt_tokens for r in rows),
            "completion_tokens": sum(r.completion_tokens for r in rows),
            "cost": sum((r.cost for r in rows), Decimal(0))}


def _json(flt: ReportFilter, rows: list[SpendRow], stats: list[DeploymentStats]
          ) -> dict[str, Any]:
    return {"filter": {k: v.isoformat() if isinstance(v, datetime) else v
                       for k, v in asdict(flt).items()},
            "totals": _totals(rows),
            "spend": [asdict(r) for r in rows],
            "deployments": [asdict(s) | {"error_rate": s.error_rate} for s in stats]}


def _csv(records: list[dict[str, Any]]) -> None:
    if not records:
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)


def _spend_table(rows: list[SpendRow]) -> Table:
    table = Table(title="spend", title_justify="left")
    heads = ("period", "tenant", "model", "deployment", "provider", "requests", "failed",
             "tokens in", "tokens out", "cost (USD)")
    for head in heads:
        table.add_column(head, justify="right" if heads.index(head) >= 5 else "left")
    for r in rows:
        table.add_row(r.period, r.tenant, r.model, r.deployment or "-", r.provider or "-",
                      str(r.requests), str(r.failed), str(r.prompt_tokens),
                      str(r.completion_tokens), f"{r.cost:.6f}")
    t = _totals(rows)
    table.add_row("total", "", "", "", "", str(t["requests"]), str(t["failed"]),
                  str(t["prompt_tokens"]), str(t["completion_tokens"]), f"{t['cost']:.6f}",
                  style="bold")
    return table


def _stats_table(stats: list[DeploymentStats]) -> Table:
    table = Table(title="deployments", title_justify="left")
    for head in ("deployment", "provider", "requests", "error rate", "p50 ms", "p95 ms",
                 "p99 ms"):
        table.add_column(head, justify="left" if head in ("deployment", "provider") else "right")
    for s in stats:
        table.add_row(s.deployment, s.provider, str(s.requests), f"{s.error_rate:.2%}",
                      *(f"{v:.0f}" if v is not None else "-"
                        for v in (s.p50_ms, s.p95_ms, s.p99_ms)))
    return table


def require_matplotlib() -> Any:
    """matplotlib, or a clear error naming the extra to install."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'batchyard[plot]'") from None
    return matplotlib
