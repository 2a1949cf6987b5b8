"""Who is calling: the tenant behind the producer's API key, checked on every call.

The check reads the key's row each time (one primary-key lookup), so a key revoked by
``batchyard keys revoke`` is refused by a running producer on its very next call. With no key
the caller is the ``default`` tenant (the embedded, single-user mode) unless the deployment
set ``BATCHYARD_REQUIRE_API_KEY=1``.

A submission on PostgreSQL skips that read when it can (its input is a list or a regular file,
which can be read again): it validates its input against the access the last one read, and
the job's insert checks, in the same statement, that the rows it was read from are unchanged
(``storage.tenants.AccessCheck``). If they changed, nothing is written and the submission
starts again with a fresh read; an input refused under that access is refused only after a
fresh read found the access unchanged (a loosened limit applies at once too). So a revocation
or new limits apply to the very next submission, as before, and a realtime submit is one
statement, not two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pydantic import SecretStr
from sqlalchemy import Connection, Engine

from producers.parse import InputReader, Source
from schemas.errors import AccessDeniedError, InputError, InputProblem
from schemas.tenants import Access, Identity, TenantLimits
from storage.jobs import NewRequest
from storage.tenants import (
    AccessCheck,
    authenticate,
    live_requests,
    lock_tenant,
    read_access,
)

__all__ = ["Caller", "allowed_names", "check_queue", "guarded_rows", "queue_capped"]


@dataclass(frozen=True)
class Caller:
    """A producer's credentials; ``tenant()`` resolves them afresh on each call."""

    engine: Engine
    api_key: SecretStr | None
    required: bool = False
    _last: dict[str | None, tuple[Access, AccessCheck]] = field(
        default_factory=dict, compare=False, repr=False)
    """The access last read, by key: what ``access(reuse=True)`` hands out unread."""

    def identity(self) -> Identity:
        """The caller's tenant and key; AccessDeniedError for a bad, revoked or missing key."""
        key = self._key()
        return Identity() if key is None else authenticate(self.engine, key)

    def access(self, *, reuse: bool = False) -> tuple[Access, AccessCheck | None]:
        """``identity`` with the limits a submission must fit, in one read of the database
        (the tenant's row for a keyless caller; the key's joined to its tenant's with one).

        ``reuse`` (PostgreSQL): the access last read, without reading, and the check the
        job's insert must make that it still holds (``create_job(still=)``; on
        ``StaleAccessError``, call again without ``reuse``). A fresh read comes with no check.
        """
        last = self._last.get(self._key())  # one entry at most: the key is the producer's
        if reuse and last is not None and self.engine.dialect.name == "postgresql":
            return last
        return self.read()[0], None

    def read(self) -> tuple[Access, AccessCheck | None]:
        """Read the access (kept for the next ``access(reuse=True)``), with the check of the
        rows it was read from (None: limits a statement cannot compare; not kept)."""
        key = self._key()
        try:
            access, check = read_access(self.engine, key)
        except Exception:
            self._last.pop(key, None)  # revoked, or gone: nothing left to reuse
            raise
        if check is None:
            self._last.pop(key, None)
        else:
            self._last[key] = (access, check)
        return access, check

    def _key(self) -> str | None:
        """The API key; None for the keyless default tenant (AccessDeniedError if a key is
        required)."""
        if self.api_key is None or not self.api_key.get_secret_value():
            if self.required:
                raise AccessDeniedError(
                    "an API key is required (set BATCHYARD_API_KEY or pass --api-key)")
            return None
        return self.api_key.get_secret_value()

    def tenant(self) -> str:
        """The caller's tenant id (see ``identity``)."""
        return self.identity().tenant_id


def allowed_names(public: dict[str, str], *limits: TenantLimits) -> set[str]:
    """The model names (and aliases) the caller may submit: those whose model group is on
    every allow-list given (the tenant's, the key's; an entry may name a group or any of its
    aliases); all without a list."""
    names = set(public)
    for each in limits:
        if each.models is not None:
            groups = {public[name] for name in each.models if name in public}
            names &= {name for name, group in public.items() if group in groups}
    return names


def check_queue(conn: Connection | None, who: Identity, limits: TenantLimits,
                key_limits: TenantLimits) -> None:
    """InputError when the job being inserted in ``conn``'s transaction takes the tenant (or
    its key) past ``max_queued``. The tenant's row is locked first, so concurrent submissions
    are checked one after the other and cannot both squeeze under the limit. ``conn`` may be
    None only where nothing is capped (``queue_capped``)."""
    if not queue_capped(limits, key_limits):
        return
    if conn is None:
        raise TypeError("a capped queue is checked in the job's transaction, not without one")
    scopes = [(f"tenant {who.tenant_id!r}", limits.max_queued, None),
              (f"API key {who.key_id!r}", key_limits.max_queued, who.key_id)]
    lock_tenant(conn, who.tenant_id)
    for name, cap, key in scopes:
        if cap is None or (key is None and name.startswith("API key")):
            continue
        live = live_requests(conn, who.tenant_id, key)
        if live > cap:
            raise InputError([InputProblem(0, (
                f"{name} may have {cap} unfinished requests; this job would make it {live}"))])


def queue_capped(limits: TenantLimits, key_limits: TenantLimits) -> bool:
    """Whether the tenant or its key has a ``max_queued`` to check (``check_queue`` reads
    the database only then)."""
    return limits.max_queued is not None or key_limits.max_queued is not None


def guarded_rows(who: Identity, limits: TenantLimits, key_limits: TenantLimits,
                 reader: InputReader, source: Source
                 ) -> tuple[Iterator[NewRequest], Callable[[Connection | None], None]]:
    """The job's rows, and the check run after the last one inside the job's transaction:
    the input's problems first, then ``max_queued`` (failing rolls it back). The check reads
    the database only if ``queue_capped``."""
    rows = reader.rows(source)

    def check(conn: Connection | None) -> None:
        reader.check()
        check_queue(conn, who, limits, key_limits)

    return rows, check
