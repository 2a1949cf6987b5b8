"""``batchyard routes``: check a catalog file, and explain where a request would go now."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import click

from routing.catalog import load_catalog
from routing.explain import Explanation, explain
from routing.fallbacks import chain
from routing.limits import Limiter
from routing.router import Router
from routing.tokens import TokenEstimate
from schemas.catalog import Catalog, Deployment, Strategy
from schemas.errors import ConfigError, GatewayError
from schemas.jobs import RoutingOptions
from schemas.settings import Settings, read_secret

__all__ = ["routes"]


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain aligned columns: readable in a terminal, greppable in a log."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [headers, *rows]]
    return "\n".join(lines)


def _limits(dep: Deployment) -> str:
    parts = []
    window = f"/{dep.limit_window_s:g}s"
    if dep.rpm:
        parts.append(f"{dep.rpm} req{window}")
    if dep.tpm:
        parts.append(f"{dep.tpm} tok{window}")
    if dep.max_concurrency:
        parts.append(f"{dep.max_concurrency} at once")
    return ", ".join(parts) or "-"


def _tags(dep: Deployment) -> str:
    return ",".join(f"{k}={v}" for k, v in dep.tags.items()) or "-"


def _credentials(dep: Deployment) -> str:
    names = [getattr(dep, f) for f in ("api_key_env", "aws_access_key_id_env",
                                       "aws_secret_access_key_env") if getattr(dep, f)]
    return ",".join(n if read_secret(n) is not None else f"{n} (unset)" for n in names) or "-"


def _check_providers(catalog: Catalog, source: str) -> None:
    from providers.registry import PROVIDERS

    for name, dep in catalog.deployments.items():
        if dep.provider not in PROVIDERS:
            known = ", ".join(sorted(PROVIDERS))
            raise ConfigError(f"{source}: deployments.{name}.provider: unknown provider "
                              f"{dep.provider!r}; known providers: {known}")


@click.group()
def routes() -> None:
    """The routing catalog: validate it, and explain routing decisions."""


@routes.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def check(settings: Settings, file: Path | None) -> None:
    """Validate FILE (default: BATCHYARD_CONFIG) and print the resolved models and deployments.

    Errors name the file, the key path and the problem (exit code 1). Credentials are shown by
    environment variable name, marked "(unset)" when this shell does not set them.
    """
    path = file or settings.config
    try:
        catalog = load_catalog(path)
        _check_providers(catalog, str(path))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    models = [(name, ",".join(g.aliases) or "-", g.strategy.value, ",".join(g.deployments),
               " → ".join(chain(catalog, name)[1:]) or "-")
              for name, g in catalog.models.items()]
    click.echo(_table(("model", "aliases", "strategy", "deployments", "fallbacks"), models))
    click.echo()
    deps = [(d.name, d.provider, d.model, f"{d.weight:g}", _limits(d),
             str(d.context_window or "-"), _tags(d),
             f"{d.pricing.input}/{d.pricing.output}", _credentials(d))
            for d in catalog.deployments.values()]
    click.echo(_table(("deployment", "provider", "upstream model", "weight", "limits", "context",
                       "tags", "USD/1M in/out", "credentials"), deps))
    policy = catalog.routing
    click.echo(f"\nwhen unavailable: {policy.when_unavailable}; breaker: "
               f"{policy.breaker.consecutive_failures} in a row or "
               f"{policy.breaker.failure_rate:.0%} of {policy.breaker.min_calls}+ calls in "
               f"{policy.breaker.window_s:g}s, cooldown {policy.breaker.cooldown_s:g}s")
    click.echo(f"{path}: OK, {len(catalog.models)} models, {len(catalog.deployments)} "
               "deployments")


def _tag(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--tag")
    return key, value


def _state(exp: Explanation, dep: Deployment) -> tuple[str, str, str, str]:
    """breaker, in flight, use of the window, latency."""
    cand = next(c for c in exp.candidates if c.deployment.name == dep.name)
    s = cand.state
    if s is None:
        return "?", "?", "?", "?"
    breaker = s.breaker + (f" {s.open_s:.1f}s" if s.breaker == "open" else "")
    if s.cooling_s:
        breaker += f", cooling {s.cooling_s:.1f}s"
    use = f"{s.requests_in_window} req"
    if dep.rpm:
        use += f"/{dep.rpm}"
    if dep.tpm:
        use += f", {s.tokens_in_window}/{dep.tpm} tok"
    latency = "-" if s.latency_ms is None else f"{s.latency_ms:.0f}ms"
    flying = f"{s.in_flight}" + (f"/{dep.max_concurrency}" if dep.max_concurrency else "")
    return breaker, flying, use, latency


def render(exp: Explanation) -> str:
    """The explanation as text: the chain, every deployment's state, the decision."""
    head = [f"model {exp.model} → group {exp.group}; chain: {' → '.join(exp.chain)}",
            "strategy: " + ", ".join(f"{k} {v}" for k, v in exp.strategies.items())]
    rows = []
    for cand in exp.candidates:
        dep = cand.deployment
        rows.append((cand.model, dep.name, _tags(dep), f"{dep.weight:g}", _limits(dep),
                     *_state(exp, dep), cand.excluded or "yes"))
    table = _table(("model", "deployment", "tags", "weight", "limits", "breaker", "in flight",
                    "window", "latency", "eligible"), rows)
    tail = [f"routing state unavailable: {exp.state_error}"] if exp.state_error else []
    return "\n".join([*head, table, *tail, f"decision: {exp.decision}"])


@routes.command("explain")
@click.argument("model")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE",
              help="A tag the job requires (repeatable), e.g. --tag region=eu.")
@click.option("--strategy", type=click.Choice([s.value for s in Strategy]),
              help="The job's strategy override.")
@click.option("--tokens", type=int, default=0, show_default=True,
              help="The request's size in tokens (for context windows and tpm).")
@click.pass_obj
def explain_cmd(settings: Settings, model: str, tags: tuple[str, ...], strategy: str | None,
                tokens: int) -> None:
    """Show which deployment a request for MODEL would take now, and why.

    Reads the shared state every worker uses (breakers, cooldowns, limits in use, latency)
    from REDIS_URL, and asks for a dry-run admission: nothing is taken.
    """
    try:
        catalog = load_catalog(settings.config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    options = RoutingOptions(strategy=strategy, require_tags=dict(_tag(t) for t in tags))
    router = Router(catalog, Limiter(settings.redis_url, catalog.routing))

    async def _run() -> Explanation:
        try:
            return await explain(router, model, options, TokenEstimate(tokens, None))
        finally:
            await router.aclose()

    try:
        click.echo(render(asyncio.run(_run())))
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from None
