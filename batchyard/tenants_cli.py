"""``batchyard tenants`` and ``batchyard keys``: the operator's view of who may submit.

These are operator commands: they act on the database at DATABASE_URL directly and need no
API key. A key is printed once, at creation; only its hash is stored.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from schemas.settings import Settings
from schemas.tenants import Budget, TenantLimits, TenantView

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["keys", "tenants"]

console = Console()


def _engine(settings: Settings) -> Engine:
    from storage import ensure_schema, make_engine

    engine = make_engine(settings.database_url)
    ensure_schema(engine)
    return engine


def _limit_options(func: Any) -> Any:
    """The limit flags shared by ``tenants create|limits`` and ``keys create|limits``."""
    flags = [
        click.option("--rpm", type=click.IntRange(1), help="Requests per limit window."),
        click.option("--tpm", type=click.IntRange(1), help="Tokens per limit window."),
        click.option("--max-in-flight", type=click.IntRange(1), help="Upstream calls at once."),
        click.option("--max-queued", type=click.IntRange(1),
                     help="Unfinished requests at once; a submit beyond it is refused."),
        click.option("--models", help="Comma-separated model allow-list."),
        click.option("--budget", type=Decimal, help="Spend ceiling in USD per period."),
        click.option("--budget-period", type=click.Choice(["daily", "monthly", "rolling"]),
                     default="monthly", show_default=True),
        click.option("--rolling-s", type=float, help="Length of a rolling budget period."),
        click.option("--alert-at", type=float, default=0.8, show_default=True,
                     help="Share of the budget that raises a budget alert."),
        click.option("--on-budget-exceeded", type=click.Choice(["fail", "pause"]),
                     default="fail", show_default=True,
                     help="Once the budget is spent: fail the remaining requests "
                          "(budget_exceeded), or pause them until the next period or a "
                          "raised budget."),
        click.option("--limit-window-s", type=float, default=60.0, show_default=True,
                     help="The window rpm/tpm count over."),
    ]
    for flag in reversed(flags):
        func = flag(func)
    return func


def _limits(opts: dict[str, Any]) -> TenantLimits:
    budget = None
    if opts["budget"] is not None:
        budget = Budget(amount=opts["budget"], period=opts["budget_period"],
                        rolling_s=opts["rolling_s"], alert_at=opts["alert_at"],
                        on_exceeded=opts["on_budget_exceeded"])
    models = [m.strip() for m in opts["models"].split(",") if m.strip()] if opts["models"] \
        else None
    return TenantLimits(rpm=opts["rpm"], tpm=opts["tpm"], max_in_flight=opts["max_in_flight"],
                        max_queued=opts["max_queued"], models=models, budget=budget,
                        limit_window_s=opts["limit_window_s"])


@click.group()
def tenants() -> None:
    """Tenants: who owns jobs, and their limits."""


@tenants.command("create")
@click.argument("tenant_id")
@click.option("--name", default="", help="A display name (default: the id).")
@_limit_options
@click.pass_obj
def create(settings: Settings, /, tenant_id: str, name: str, **opts: Any) -> None:
    """Create TENANT_ID (a-z, 0-9, '-', '_'), optionally with limits."""
    from storage.tenants import create_tenant

    _print_tenant(create_tenant(_engine(settings), tenant_id, name, _limits(opts)), False)


@tenants.command("limits")
@click.argument("tenant_id")
@_limit_options
@click.pass_obj
def limits(settings: Settings, /, tenant_id: str, **opts: Any) -> None:
    """Replace TENANT_ID's limits (flags not given mean no limit)."""
    from storage.tenants import set_limits

    _print_tenant(set_limits(_engine(settings), tenant_id, _limits(opts)), False)


@tenants.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def list_tenants_(settings: Settings, as_json: bool) -> None:
    """List every tenant."""
    from storage.tenants import list_tenants

    rows = list_tenants(_engine(settings))
    if as_json:
        click.echo(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return
    table = Table("id", "name", "limits", "created")
    for t in rows:
        table.add_row(t.id, t.name, _describe(t.limits),
                      t.created_at.isoformat(timespec="seconds"))
    console.print(table)


@tenants.command("show")
@click.argument("tenant_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def show(settings: Settings, tenant_id: str, as_json: bool) -> None:
    """Show one tenant, its limits and its keys."""
    from storage.tenants import get_tenant, list_keys

    engine = _engine(settings)
    tenant = get_tenant(engine, tenant_id)
    _print_tenant(tenant, as_json)
    if not as_json:
        if tenant.limits.budget is not None:
            click.echo(_spent(engine, tenant.id, tenant.limits.budget))
        active = [k.id for k in list_keys(engine, tenant_id) if k.active]
        click.echo(f"active keys: {', '.join(active) or 'none'}")


def _spent(engine: Engine, tenant_id: str, budget: Budget) -> str:
    """The tenant's spend in its budget's current period, as the database has it."""
    from routing.quotas import period_start
    from schemas.tenants import QuotaScope
    from storage.history import usage_history

    now = datetime.now(UTC)
    edges = [period_start(budget, now).timestamp(), now.timestamp() + 1]
    scope = QuotaScope(tenant_id=tenant_id, key_id=None, limits=TenantLimits(budget=budget))
    spent = sum(usage_history(engine, scope, edges, None).spend, Decimal(0))
    return (f"spent ${spent:.6f} of ${budget.amount} this {budget.period} period "
            f"({spent / budget.amount:.0%})")


@tenants.command("alerts")
@click.argument("tenant_id")
@click.option("--last", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="How many of the newest alerts to show.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def alerts(settings: Settings, tenant_id: str, last: int, as_json: bool) -> None:
    """Show TENANT_ID's budget alerts, newest first: one per budget (the tenant's or one of
    its keys') and period, raised when spend crosses the budget's --alert-at share. They are
    kept in Redis (the stream batchyard:tenant:<id>:alerts, its newest 1,000)."""
    import redis

    from schemas.keys import tenant_key

    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        entries: list[tuple[str, dict[str, str]]] = client.xrevrange(  # type: ignore[assignment]
            tenant_key(tenant_id, "alerts"), count=last)
    finally:
        client.close()
    rows = [{"at": datetime.fromtimestamp(int(entry_id.split("-")[0]) / 1000, UTC)
             .isoformat(timespec="seconds"), **fields} for entry_id, fields in entries]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no budget alerts for tenant {tenant_id}")
        return
    table = Table("at", "scope", "spent", "budget", "period")
    for row in rows:
        scope = f"key {row['api_key']}" if row.get("api_key") else "tenant"
        table.add_row(row["at"], scope, f"${row['spent']}", f"${row['budget']}", row["period"])
    console.print(table)


def _print_tenant(tenant: TenantView, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(tenant.model_dump(mode="json"), indent=2))
        return
    click.echo(f"tenant {tenant.id} ({tenant.name}), created "
               f"{tenant.created_at.isoformat(timespec='seconds')}")
    click.echo(f"limits: {_describe(tenant.limits)}")


def _describe(limits: TenantLimits) -> str:
    data = limits.model_dump(mode="json", exclude_defaults=True)
    return ", ".join(f"{k}={v}" for k, v in data.items()) or "none"


@click.group()
def keys() -> None:
    """API keys: shown once at creation, stored hashed, revoked at once."""


@keys.command("create")
@click.option("--tenant", "tenant_id", required=True, help="The tenant the key acts for.")
@click.option("--name", default="", help="What the key is for.")
@_limit_options
@click.pass_obj
def create_key_(settings: Settings, /, tenant_id: str, name: str, **opts: Any) -> None:
    """Create a key and print it (the only time it is shown). Limits given here are the
    key's own: each call must fit both its tenant's limits and its key's."""
    from storage.tenants import create_key

    new = create_key(_engine(settings), tenant_id, name, _limits(opts))
    click.echo(new.key)
    click.echo(f"key {new.view.id} for tenant {tenant_id}: store it now, it is not shown "
               "again", err=True)


@keys.command("limits")
@click.argument("key_id")
@_limit_options
@click.pass_obj
def key_limits_(settings: Settings, /, key_id: str, **opts: Any) -> None:
    """Replace KEY_ID's own limits (flags not given mean no limit of the key's own; its
    tenant's limits still apply)."""
    from storage.tenants import set_key_limits

    key = set_key_limits(_engine(settings), key_id, _limits(opts))
    click.echo(f"key {key.id} (tenant {key.tenant_id}) limits: {_describe(key.limits)}")


@keys.command("list")
@click.option("--tenant", "tenant_id", help="Only this tenant's keys.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def list_keys_(settings: Settings, tenant_id: str | None, as_json: bool) -> None:
    """List keys by their public id (never their secret)."""
    from storage.tenants import list_keys

    rows = list_keys(_engine(settings), tenant_id)
    if as_json:
        click.echo(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return
    table = Table("id", "tenant", "name", "limits", "created", "revoked")
    for k in rows:
        table.add_row(k.id, k.tenant_id, k.name, _describe(k.limits),
                      k.created_at.isoformat(timespec="seconds"),
                      k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "")
    console.print(table)


@keys.command("revoke")
@click.argument("key_id")
@click.pass_obj
def revoke(settings: Settings, key_id: str) -> None:
    """Revoke KEY_ID (bya_...): every later call with it is refused."""
    from storage.tenants import revoke_key

    revoke_key(_engine(settings), key_id)
    click.echo(f"revoked {key_id}")
