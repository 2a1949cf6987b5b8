"""The operator commands: worker, mock-upstream, db upgrade, flower, demo, local-model."""

from __future__ import annotations

import click

from schemas.keys import TIER_ORDER, Tier, queue_name
from schemas.settings import Settings

__all__ = ["register"]


@click.command()
@click.option("--tiers", default=",".join(t.value for t in TIER_ORDER), show_default=True,
              help="Comma-separated tiers to serve; higher tiers are always drained first.")
@click.option("--max-in-flight", type=int, help="Upstream calls in flight at most "
              "(default BATCHYARD_WORKER__MAX_IN_FLIGHT or 512).")
@click.option("--feeders", type=int, help="Celery threads taking chunks (default 4).")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--hostname", default=None, help="Celery node name (default: batchyard@HOST).")
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes to run from this command (about one per core); "
              "--max-in-flight applies to each.")
@click.pass_obj
def worker(settings: Settings, /, tiers: str, loglevel: str, hostname: str | None, processes: int,
           **limits: int | None) -> None:
    """Run a worker: takes chunks from the tier queues and calls the upstreams.

    One process keeps up to --max-in-flight upstream calls running on an asyncio loop;
    --processes N runs N of them (one Python process uses one core at a time); run more
    hosts to scale out. SIGTERM stops taking work, lets calls finish for
    BATCHYARD_WORKER__SHUTDOWN_GRACE_S seconds, and hands back the rest.
    """
    from storage import ensure_schema, make_engine
    from workers import worker_app

    chosen = _parse_tiers(tiers)
    if processes > 1:
        from batchyard.supervise import run_workers

        options = {"--tiers": tiers, "--max-in-flight": limits["max_in_flight"],
                   "--feeders": limits["feeders"], "--loglevel": loglevel}
        raise SystemExit(run_workers(processes, settings.config, options, hostname))
    max_in_flight, feeders = limits["max_in_flight"], limits["feeders"]
    updates: dict[str, object] = {"tiers": chosen}
    if max_in_flight:
        updates["max_in_flight"] = max_in_flight
    if feeders:
        updates["feeders"] = feeders
    settings = settings.model_copy(update={"worker": settings.worker.model_copy(update=updates)})
    ensure_schema(make_engine(settings.database_url))
    app = worker_app(settings)
    queues = ",".join(queue_name(t) for t in TIER_ORDER if t in chosen)
    argv = ["worker", "--pool=threads", f"--concurrency={settings.worker.feeders}",
            f"--queues={queues}", f"--loglevel={loglevel}", "--without-gossip",
            "--without-mingle"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    app.worker_main(argv)  # type: ignore[attr-defined]


def _parse_tiers(value: str) -> list[Tier]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    known = {t.value for t in Tier}
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise click.BadParameter(f"unknown tier(s) {bad}; choose from {sorted(known)}",
                                 param_hint="--tiers")
    return [Tier(n) for n in names]


@click.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_obj
def db_upgrade(settings: Settings, revision: str) -> None:
    """Create or migrate the tables (Alembic) in DATABASE_URL."""
    from storage import make_engine, upgrade

    engine = make_engine(settings.database_url)
    upgrade(engine, revision)
    click.echo(f"database at {engine.url.render_as_string(hide_password=True)} is at {revision}")


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--port", default=5555, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True)
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def flower(settings: Settings, port: int, address: str, flower_args: tuple[str, ...]) -> None:
    """Run Flower on the broker: workers, tasks (ids only) and tier queue lengths.

    Extra arguments go to Flower (e.g. --basic-auth=user:pass).
    """
    from workers import create_app

    app = create_app(settings)
    queues = ",".join(queue_name(t) for t in TIER_ORDER)
    argv = ["flower", f"--port={port}", f"--address={address}",
            "--purge_offline_workers=60",
            *flower_args]
    app.conf.flower_queues = queues
    app.start(argv=argv)


def register(cli: click.Group) -> None:
    """Attach the operator commands to the CLI group."""
    from batchyard.demo import demo
    from batchyard.report_cli import report
    from batchyard.routes_cli import routes
    from batchyard.tenants_cli import keys, tenants
    from batchyard.webhooks_cli import webhooks

    cli.add_command(worker)
    cli.add_command(webhooks)
    cli.add_command(routes)
    cli.add_command(tenants)
    cli.add_command(keys)
    cli.add_command(report)
    cli.add_command(db)
    cli.add_command(flower)
    cli.add_command(demo)
    try:
        from mock_upstream.cli import command as mock_upstream
    except ImportError:
        pass
    else:
        cli.add_command(mock_upstream, name="mock-upstream")
    try:
        from batchyard.local_model import command as local_model
    except ImportError:
        return
    cli.add_command(local_model, name="local-model")
