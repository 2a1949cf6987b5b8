"""Schema migrations with Alembic, run programmatically (``batchyard db upgrade``)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from schemas.errors import ConfigError

__all__ = ["alembic_config", "ensure_schema", "upgrade"]


def alembic_config(url: str) -> Config:
    """An Alembic config for ``url`` with our bundled migration scripts."""
    cfg = Config()
    cfg.set_main_option("script_location", "storage:migrations")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # an ini value: escape %
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database at ``engine`` to ``revision`` (idempotent)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def ensure_schema(engine: Engine) -> None:
    """Make sure the schema is current: an embedded SQLite file is migrated on the spot; any
    other database must be migrated by its operator (``batchyard db upgrade``)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current == head:
        return
    if engine.dialect.name == "sqlite":
        upgrade(engine)
        return
    where = engine.url.render_as_string(hide_password=True)
    raise ConfigError(
        f"the database at {where} is at revision {current or 'none'}, not {head}: "
        "run `batchyard db upgrade`"
    )
