"""The routing catalog file: deployments (where to send) and models (what users ask for).

```yaml
deployments:
  mock-a:
    provider: openai                 # a name from providers' registry
    base_url: http://127.0.0.1:8900/v1
    model: gpt-4o-mini               # the upstream's model name
    api_key_env: MOCK_API_KEY        # credentials by environment variable name, never inline
    weight: 1
    pricing: {input: "0.15", output: "0.60", cached_input: "0.075"}   # USD per 1M tokens
    price_history:                   # optional: prices from a date on (UTC); before the first
      - {effective_from: "2026-12-01", input: "0.10", output: "0.40"}  # date, `pricing` holds
    rpm: 500                         # requests per limit_window_s (60: per minute), all workers
    tpm: 200000                      # tokens (prompt + completion) per limit_window_s
    max_concurrency: 50              # calls in flight at once, all workers
    context_window: 128000           # tokens; a longer prompt goes to a fallback model
    tags: {region: eu, data: no-retention}
models:
  gpt-4o-mini:
    aliases: [mini]
    deployments: [mock-a]
    strategy: weighted               # weighted | least_in_flight | lowest_latency | lowest_cost
                                     # | ordered
    fallbacks: [gpt-4o]              # model groups tried, in order, when this one cannot serve
routing:                             # optional: how every model group behaves
  when_unavailable: wait             # every eligible deployment cooling down: wait | fail
  breaker: {consecutive_failures: 5, failure_rate: 0.5, min_calls: 20, window_s: 30,
            cooldown_s: 15}
```
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)

__all__ = [
    "BreakerPolicy",
    "Catalog",
    "Deployment",
    "ModelGroup",
    "PricePeriod",
    "Pricing",
    "RoutingPolicy",
    "Strategy",
]

_Price = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=6)]
_Count = Annotated[int, Field(ge=1)]


def _tag_value(value: object) -> object:
    """YAML reads ``gdpr: true`` or ``tier: 1`` as non-strings; tags compare as text."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return value


_TagValue = Annotated[str, BeforeValidator(_tag_value)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Strategy(StrEnum):
    """How a model group orders its deployments for a request."""

    WEIGHTED = "weighted"
    """A weighted shuffle: traffic in proportion to ``weight``."""
    LEAST_IN_FLIGHT = "least_in_flight"
    """The deployment with the fewest calls in flight over all workers."""
    LOWEST_LATENCY = "lowest_latency"
    """The lowest moving average (EWMA) of observed latency; untried ones first."""
    LOWEST_COST = "lowest_cost"
    """The cheapest prices first."""
    ORDERED = "ordered"
    """The group's list order: the first with capacity and health wins."""


class Pricing(_Spec):
    """USD per one million tokens; ``batch_discount`` multiplies the whole cost (0.5 = half)."""

    input: _Price = Decimal(0)
    output: _Price = Decimal(0)
    cached_input: _Price | None = None
    batch_discount: Annotated[Decimal, Field(gt=0, le=1)] = Decimal(1)


def _utc_instant(value: object) -> object:
    """A YAML date is midnight UTC; a time without a zone is UTC."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str) and len(value) == 10:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value


class PricePeriod(Pricing):
    """Prices in force from ``effective_from`` until the next period's date. A request is
    priced at its finish time, so adding a period never changes a cost already recorded."""

    effective_from: Annotated[datetime, BeforeValidator(_utc_instant)]


class Deployment(_Spec):
    """One place a model can be served: a provider endpoint and an upstream model name."""

    name: str = ""
    provider: str = Field(min_length=1)
    base_url: str = Field(min_length=1)
    model: str = Field(min_length=1)
    api_key_env: str | None = None
    weight: Annotated[float, Field(gt=0)] = 1.0
    timeout_s: Annotated[float, Field(gt=0)] | None = None
    pricing: Pricing = Pricing()
    price_history: list[PricePeriod] = []  # dated prices; `pricing` holds before the first
    headers: dict[str, str] = {}
    api_key: SecretStr | None = Field(default=None, exclude=True, repr=False)
    api_version: str | None = None  # Azure's api-version query value; the adapter has a default
    default_max_tokens: Annotated[int, Field(ge=1)] | None = None  # when a provider requires one
    unsupported_params: Literal["drop", "reject"] = "drop"  # a parameter the provider can't honour
    region: str | None = None  # AWS region (Bedrock); else taken from base_url
    aws_access_key_id_env: str | None = None
    aws_secret_access_key_env: str | None = None
    aws_session_token_env: str | None = None
    aws_access_key_id: SecretStr | None = Field(default=None, exclude=True, repr=False)
    aws_secret_access_key: SecretStr | None = Field(default=None, exclude=True, repr=False)
    aws_session_token: SecretStr | None = Field(default=None, exclude=True, repr=False)
    rpm: _Count | None = None  # requests admitted per limit_window_s, over every worker
    tpm: _Count | None = None  # prompt + completion tokens per limit_window_s
    max_concurrency: _Count | None = None  # calls in flight at once, over every worker
    limit_window_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    context_window: _Count | None = None  # prompt + requested output tokens it accepts
    tags: dict[str, _TagValue] = {}  # e.g. {region: eu}; jobs may require tags

    @model_validator(mode="after")
    def _history_in_order(self) -> Deployment:
        dates = [p.effective_from for p in self.price_history]
        if dates != sorted(set(dates)):
            raise ValueError("price_history: effective_from dates must be distinct and in "
                             "increasing order")
        return self

    @property
    def limited(self) -> bool:
        """Whether admissions must be remembered for a window (an rpm or tpm limit)."""
        return self.rpm is not None or self.tpm is not None

    def has_tags(self, required: dict[str, str]) -> bool:
        """Whether every required tag is on this deployment with the same value."""
        return all(self.tags.get(key) == value for key, value in required.items())


class ModelGroup(_Spec):
    """A public model name, its aliases, the deployments that serve it, and how to choose."""

    aliases: list[str] = []
    deployments: list[str] = Field(min_length=1)
    strategy: Strategy = Strategy.WEIGHTED
    fallbacks: list[str] = []


class BreakerPolicy(_Spec):
    """When a deployment's circuit breaker opens, and for how long.

    It opens on ``consecutive_failures`` deployment-health failures in a row (5xx, timeouts,
    connection errors), or when at least ``min_calls`` calls in a ``window_s`` window failed
    at ``failure_rate`` or more. After ``cooldown_s`` one probe call goes through: its success
    closes the breaker, its failure opens it again.
    """

    consecutive_failures: _Count = 5
    failure_rate: Annotated[float, Field(gt=0, le=1)] = 0.5
    min_calls: _Count = 20
    window_s: Annotated[float, Field(gt=0)] = 30.0
    cooldown_s: Annotated[float, Field(gt=0)] = 15.0


class RoutingPolicy(_Spec):
    """Catalog-wide routing behaviour (every field has a default)."""

    when_unavailable: Literal["wait", "fail"] = "wait"
    """Every eligible deployment cooling down: wait for one (without holding a worker slot),
    or fail the request at once with the reason."""
    breaker: BreakerPolicy = BreakerPolicy()
    failovers: Annotated[int, Field(ge=0, le=10)] = 2
    """Other deployments tried within one attempt after a deployment-health error."""
    default_completion_tokens: _Count = 256
    """Tokens reserved against a tpm limit for the answer when a request names no limit."""
    latency_alpha: Annotated[float, Field(gt=0, le=1)] = 0.2
    """Weight of the newest call in the latency moving average."""
    throttle_cooldown_s: Annotated[float, Field(gt=0)] = 5.0
    """How long a deployment that answered 429 without Retry-After is left alone."""


class Catalog(_Spec):
    """The whole catalog file."""

    deployments: dict[str, Deployment]
    models: dict[str, ModelGroup] = Field(min_length=1)
    routing: RoutingPolicy = RoutingPolicy()

    @model_validator(mode="after")
    def _references_resolve(self) -> Catalog:
        for name, dep in self.deployments.items():
            dep.name = name
        seen: dict[str, str] = {}
        for model, group in self.models.items():
            for dep_name in group.deployments:
                if dep_name not in self.deployments:
                    raise ValueError(
                        f"models.{model}.deployments: unknown deployment {dep_name!r}")
            for target in group.fallbacks:
                if target not in self.models:
                    raise ValueError(f"models.{model}.fallbacks: unknown model {target!r} "
                                     "(fallbacks name model groups, not aliases)")
                if target == model:
                    raise ValueError(f"models.{model}.fallbacks: a model cannot fall back "
                                     "to itself")
            for alias in [model, *group.aliases]:
                if alias in seen and seen[alias] != model:
                    raise ValueError(
                        f"name {alias!r} is used by models {seen[alias]!r} and {model!r}")
                seen[alias] = model
        return self

    def public_names(self) -> dict[str, str]:
        """Every accepted model name or alias → its model group name."""
        names = {}
        for model, group in self.models.items():
            names[model] = model
            names.update({alias: model for alias in group.aliases})
        return names

    def members(self, model: str) -> list[Deployment]:
        """A model group's deployments, in the group's order."""
        return [self.deployments[name] for name in self.models[model].deployments]
