"""The database not answering, said once and clearly: ``DatabaseUnavailableError`` naming the
database (without its password), the driver's reason and what the failed call left behind.

Callers wrap each database call at their boundary (the producer, the CLI) with
``database_errors``; the driver's exception stays attached as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from schemas.errors import DatabaseUnavailableError

__all__ = ["UNREACHABLE", "database_errors", "unavailable"]

UNREACHABLE = (OperationalError, InterfaceError, PoolTimeoutError)
"""What SQLAlchemy raises when the server is down, cut off, locked or its pool is exhausted."""


def unavailable(engine: Engine, exc: Exception, consequence: str) -> DatabaseUnavailableError:
    """The error to raise (``from exc``) for ``exc``: one line naming the database."""
    cause = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or ["?"])[0]
    where = engine.url.render_as_string(hide_password=True)
    return DatabaseUnavailableError(
        f"the database did not answer at {where} ({cause}); {consequence}")


@contextmanager
def database_errors(engine: Engine, consequence: str) -> Iterator[None]:
    """Turn "the database does not answer" inside the block into ``unavailable``'s error."""
    try:
        yield
    except UNREACHABLE as exc:
        raise unavailable(engine, exc, consequence) from exc
