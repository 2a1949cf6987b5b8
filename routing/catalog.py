"""Loading the routing catalog file, with errors that name the file, the key and the problem."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import SecretStr, ValidationError

from schemas.catalog import Catalog, Deployment
from schemas.errors import ConfigError

__all__ = ["load_catalog", "parse_catalog"]

SecretLookup = Callable[[str], str | None]

_SECRET_FIELDS = ("api_key", "aws_access_key_id", "aws_secret_access_key", "aws_session_token")
_OPTIONAL_SECRETS = frozenset({"aws_session_token"})


def load_catalog(path: Path | str, secrets: SecretLookup | None = None) -> Catalog:
    """Read and validate a catalog file; with ``secrets``, fill each deployment's credentials."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: catalog file not found (set BATCHYARD_CONFIG to your catalog's path; "
            "examples/batchyard.yaml shows the format)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the catalog: {exc}") from exc
    return parse_catalog(text, str(path), secrets)


def parse_catalog(text: str, source: str = "<catalog>",
                  secrets: SecretLookup | None = None) -> Catalog:
    """Validate catalog YAML text; ``source`` names it in errors."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the catalog must be a mapping with deployments and models")
    _refuse_inline_secrets(raw, source)
    try:
        catalog = Catalog.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(source, exc)) from exc
    if secrets is not None:
        _fill_secrets(catalog, source, secrets)
    return catalog


def _refuse_inline_secrets(raw: dict[str, object], source: str) -> None:
    secret_fields = {n for n, f in Deployment.model_fields.items() if f.exclude}
    deployments = raw.get("deployments")
    if not isinstance(deployments, dict):
        return
    for name, dep in deployments.items():
        for key in secret_fields & set(dep if isinstance(dep, dict) else ()):
            raise ConfigError(
                f"{source}: deployments.{name}.{key}: credentials are never written in the "
                f"catalog; name the environment variable that holds it with {key}_env"
            )


def _describe(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        # cross-reference checks name their own key path at the start of the message
        lines.append(f"{source}: {where}: {message}" if where else f"{source}: {message}")
    return "\n".join(lines)


def _fill_secrets(catalog: Catalog, source: str, secrets: SecretLookup) -> None:
    """Each ``<field>_env`` names the environment variable that holds ``<field>``."""
    for name, dep in catalog.deployments.items():
        for field in _SECRET_FIELDS:
            env_name = getattr(dep, f"{field}_env", None)
            if not env_name:
                continue
            value = secrets(env_name)
            if value is None:
                if field in _OPTIONAL_SECRETS:
                    continue
                raise ConfigError(
                    f"{source}: deployments.{name}.{field}_env: environment variable "
                    f"{env_name} is not set"
                )
            setattr(dep, field, SecretStr(value))
