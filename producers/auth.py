"""Who is calling: the tenant behind the producer's API key, checked on every call.

The check reads the key's row each time (one primary-key lookup), so a key revoked by
``batchyard keys revoke`` is refused by a running producer on its very next call. With no key
the caller is the ``default`` tenant (the embedded, single-user mode) unless the deployment
set ``BATCHYARD_REQUIRE_API_KEY=1``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from pydantic import SecretStr
from sqlalchemy import Engine

from producers.parse import InputReader, Source
from schemas.errors import AccessDeniedError, InputError, InputProblem
from schemas.tenants import DEFAULT_TENANT, TenantLimits
from storage.jobs import NewRequest
from storage.tenants import authenticate, live_requests

__all__ = ["Caller", "Counted", "allowed_names", "check_queue", "guarded_rows"]

T = TypeVar("T")


@dataclass(frozen=True)
class Caller:
    """A producer's credentials; ``tenant()`` resolves them afresh on each call."""

    engine: Engine
    api_key: SecretStr | None
    required: bool = False

    def tenant(self) -> str:
        """The caller's tenant id; AccessDeniedError for a bad, revoked or missing key."""
        if self.api_key is None or not self.api_key.get_secret_value():
            if self.required:
                raise AccessDeniedError(
                    "an API key is required (set BATCHYARD_API_KEY or pass --api-key)")
            return DEFAULT_TENANT
        return authenticate(self.engine, self.api_key.get_secret_value())


def allowed_names(public: dict[str, str], limits: TenantLimits) -> set[str]:
    """The model names (and aliases) the tenant may submit: those whose model group is on its
    allow-list (an entry may name a group or any of its aliases); all without a list."""
    if limits.models is None:
        return set(public)
    groups = {public[name] for name in limits.models if name in public}
    return {name for name, group in public.items() if group in groups}


def check_queue(engine: Engine, tenant: str, limits: TenantLimits, adding: int) -> None:
    """InputError when ``adding`` requests would take the tenant past ``max_queued``."""
    if limits.max_queued is None:
        return
    live = live_requests(engine, tenant)
    if live + adding > limits.max_queued:
        raise InputError([InputProblem(0, (
            f"tenant {tenant!r} may have {limits.max_queued} unfinished requests; it has "
            f"{live} and this job adds {adding}"))])


class Counted(Iterator[T]):
    """An iterator that counts what it yields (the rows of a job, parsed lazily)."""

    def __init__(self, inner: Iterator[T]) -> None:
        self.inner = inner
        self.n = 0

    def __next__(self) -> T:
        item = next(self.inner)
        self.n += 1
        return item


def guarded_rows(engine: Engine, tenant: str, limits: TenantLimits, reader: InputReader,
                 source: Source) -> tuple[Counted[NewRequest], Callable[[], None]]:
    """The job's rows, and the check run after the last one inside the job's transaction:
    the input's problems first, then the tenant's ``max_queued`` (failing rolls it back)."""
    rows = Counted(reader.rows(source))

    def check() -> None:
        reader.check()
        check_queue(engine, tenant, limits, rows.n)

    return rows, check
