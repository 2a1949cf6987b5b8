"""The ``batchyard`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr
from rich.console import Console

from batchyard.views import job_table
from schemas.errors import GatewayError
from schemas.keys import TIER_ORDER, Tier
from schemas.settings import Settings

__all__ = ["main"]

console = Console()
TIERS = click.Choice([t.value for t in TIER_ORDER])


def _producer(ctx: click.Context) -> Any:
    from producers import Producer

    settings: Settings = ctx.obj
    return Producer(settings)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", type=click.Path(path_type=Path), envvar="BATCHYARD_CONFIG",
              help="Routing catalog YAML (default: ./batchyard.yaml).")
@click.option("--api-key", metavar="KEY", help="Your tenant's API key (default: "
              "BATCHYARD_API_KEY; none: the built-in default tenant).")
@click.pass_context
def cli(ctx: click.Context, config: Path | None, api_key: str | None) -> None:
    """batchyard: a self-hosted batch gateway for LLM APIs.

    Reads REDIS_URL, DATABASE_URL and BATCHYARD_CONFIG from the environment (or .env).
    """
    settings = Settings()
    if config is not None:
        settings = settings.model_copy(update={"config": config})
    if api_key is not None:
        settings = settings.model_copy(update={"api_key": SecretStr(api_key)})
    ctx.obj = settings


@cli.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tier", type=TIERS, default=Tier.STANDARD.value, show_default=True,
              help="Priority tier: realtime, high, standard or bulk.")
@click.option("--meta", "meta", multiple=True, metavar="KEY=VALUE",
              help="Metadata to attach to the job (repeatable).")
@click.option("--webhook-url", metavar="URL",
              help="POST signed job.completed/failed/cancelled/expired events here.")
@click.option("--completion-window", metavar="DURATION",
              help="Deadline such as 90s, 30m, 24h: what has not run by then ends expired.")
@click.option("--wait", "wait_", is_flag=True, help="Wait for the job to end, with progress.")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@click.pass_context
def submit(ctx: click.Context, /, source: Path, tier: str, meta: tuple[str, ...], wait_: bool,
           as_json: bool, **job_options: str | None) -> None:
    """Submit SOURCE, an OpenAI Batch JSONL file; prints the job id.

    The whole file is validated first: on any bad line nothing is stored, and every
    problem is listed with its line number.
    """
    metadata = dict(_key_value(item) for item in meta)
    producer = _producer(ctx)
    options = {k: v for k, v in job_options.items() if v is not None}  # webhook, window
    job = producer.submit(source, tier=tier, metadata=metadata, **options)
    if wait_:
        job = producer.wait(job.id, progress=True)
    _show(job, as_json)


def _key_value(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--meta")
    return key, value


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def status(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Show a job's status, counts per state, tokens and cost."""
    _show(_producer(ctx).status(job_id), as_json)


@cli.command()
@click.argument("job_id")
@click.option("--timeout", type=float, help="Give up after this many seconds (exit 3).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the final status as JSON.")
@click.pass_context
def wait(ctx: click.Context, job_id: str, timeout: float | None, quiet: bool,
         as_json: bool) -> None:
    """Wait for a job to end, with a live progress bar.

    Returns as soon as the worker that ends the job announces it (Redis pub/sub); the job is
    also read every 0.25 s for its progress. A database outage while waiting is reported
    once and ridden out (polling with backoff) for up to the timeout or
    BATCHYARD_PRODUCER__WAIT_OUTAGE_S (300 s); then exit 2.
    """
    job = _producer(ctx).wait(job_id, progress=not quiet, timeout=timeout,
                              notify=lambda message: click.echo(f"warning: {message}", err=True))
    _show(job, as_json)
    if not job.done:
        sys.exit(3)


@cli.command()
@click.argument("job_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write successful lines here (default: stdout, all lines).")
@click.option("--errors", "errors_path", type=click.Path(dir_okay=False, path_type=Path),
              help="With --output: write error lines here instead of with the results.")
@click.option("--order", type=click.Choice(["input", "completion"]), default="input",
              show_default=True, help="Input line order, or the order requests finished.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl",
              show_default=True, help="OpenAI Batch output JSONL, or CSV for spreadsheets.")
@click.pass_context
def results(ctx: click.Context, job_id: str, output: Path | None, errors_path: Path | None,
            order: str, fmt: str) -> None:
    """Export a job's results as OpenAI Batch output JSONL (or CSV), streamed from the
    database page by page."""
    from batchyard.export import export_results

    counts = export_results(_producer(ctx), job_id, output, errors_path, order, fmt)
    if output is not None:
        console.print(f"wrote {counts[0]} result lines to {output}"
                      + (f" and {counts[1]} error lines to {errors_path}" if errors_path else ""))


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def cancel(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Cancel a job: waiting requests end cancelled, running ones finish and are kept."""
    _show(_producer(ctx).cancel(job_id), as_json)


def _show(job: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(job.model_dump(mode="json"), indent=2))
    else:
        console.print(job_table(job))


def main() -> None:
    """Entry point: run the CLI, turning our errors into a message and exit code 2."""
    from batchyard import commands

    commands.register(cli)
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except GatewayError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
