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
models:
  gpt-4o-mini:
    aliases: [mini]
    deployments: [mock-a]
```
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

__all__ = ["Catalog", "Deployment", "ModelGroup", "Pricing"]

_Price = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=6)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Pricing(_Spec):
    """USD per one million tokens; ``batch_discount`` multiplies the whole cost (0.5 = half)."""

    input: _Price = Decimal(0)
    output: _Price = Decimal(0)
    cached_input: _Price | None = None
    batch_discount: Annotated[Decimal, Field(gt=0, le=1)] = Decimal(1)


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


class ModelGroup(_Spec):
    """A public model name, its aliases and the deployments that serve it."""

    aliases: list[str] = []
    deployments: list[str] = Field(min_length=1)


class Catalog(_Spec):
    """The whole catalog file."""

    deployments: dict[str, Deployment]
    models: dict[str, ModelGroup] = Field(min_length=1)

    @model_validator(mode="after")
    def _references_resolve(self) -> Catalog:
        for name, dep in self.deployments.items():
            dep.name = name
        seen: dict[str, str] = {}
        for model, group in self.models.items():
            for dep_name in group.deployments:
                if dep_name not in self.deployments:
                    raise ValueError(f"model {model!r} names unknown deployment {dep_name!r}")
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
