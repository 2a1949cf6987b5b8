"""Tenants and API keys in SQL: create, list, show, revoke, and turn a key into its tenant.

A key is ``bya_<id>_<secret>`` with 8 hex digits of id and 32 bytes of URL-safe secret. Only
``sha256(key)`` is stored: a key has 256 bits of entropy, so a fast hash is as safe as a slow
one here (nothing to brute-force) and lets every call check its key with one primary-key read.
Because every call reads the key row afresh, a revocation takes effect on the next call.

A submission on PostgreSQL need not read it first: ``read_access`` returns, with the access,
an ``AccessCheck`` of the rows as read, and the job's insert checks that they still hold
(``access_holds``) in the statement that writes the job. If one changed, nothing is written
and ``StaleAccessError`` says to read the access again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    String,
    bindparam,
    cast,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError

from schemas.errors import AccessDeniedError, InputError, InputProblem, NotFoundError
from schemas.jobs import TERMINAL_JOB_STATUSES, RequestState
from schemas.tenants import (
    BUDGET_PAUSED,
    DEFAULT_TENANT,
    KEY_PREFIX,
    Access,
    ApiKeyView,
    Identity,
    NewApiKey,
    QuotaScope,
    TenantLimits,
    TenantView,
    valid_tenant_id,
)
from storage.db import without_transaction
from storage.models import API_KEYS, JOBS, REQUESTS, TENANTS, state_is

__all__ = [
    "AccessCheck",
    "StaleAccessError",
    "access_holds",
    "authenticate",
    "authorize",
    "create_key",
    "create_tenant",
    "get_tenant",
    "list_keys",
    "list_tenants",
    "live_requests",
    "lock_tenant",
    "read_access",
    "revoke_key",
    "set_key_limits",
    "set_limits",
    "wake_paused",
    "wake_scope",
]

_T = TENANTS
_K = API_KEYS
_SECRET_BYTES = 32


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_tenant(engine: Engine, tenant_id: str, name: str = "",
                  limits: TenantLimits | None = None) -> TenantView:
    """A new tenant; InputError if the id is malformed or taken."""
    try:
        valid_tenant_id(tenant_id)
    except ValueError as exc:
        raise InputError([InputProblem(0, str(exc))]) from None
    view = TenantView(id=tenant_id, name=name or tenant_id, limits=limits or TenantLimits(),
                      created_at=datetime.now(UTC))
    try:
        with engine.begin() as conn:
            conn.execute(insert(_T).values(id=view.id, name=view.name,
                                           limits=_limits_json(view.limits),
                                           created_at=view.created_at))
    except IntegrityError:
        raise InputError([InputProblem(0, f"tenant {tenant_id!r} already exists")]) from None
    return view


def set_limits(engine: Engine, tenant_id: str, limits: TenantLimits) -> TenantView:
    """Replace a tenant's limits (workers read them afresh); requests its spent budget paused
    are woken to look again."""
    with engine.begin() as conn:
        n = conn.execute(update(_T).where(_T.c.id == tenant_id)
                         .values(limits=_limits_json(limits))).rowcount
        wake_paused(conn, tenant_id)
    if not n:
        raise NotFoundError(f"no tenant {tenant_id!r}")
    return get_tenant(engine, tenant_id)


def _limits_json(limits: TenantLimits) -> dict[str, Any] | None:
    data = limits.model_dump(mode="json", exclude_defaults=True)
    return data or None


_TENANT = select(_T).where(_T.c.id == bindparam("t_id"))  # built once (see storage.jobs)


def get_tenant(engine: Engine, tenant_id: str) -> TenantView:
    """One tenant; NotFoundError when absent."""
    with without_transaction(engine) as conn:
        row = conn.execute(_TENANT, {"t_id": tenant_id}).first()
    if row is None:
        raise NotFoundError(f"no tenant {tenant_id!r}")
    return _tenant(row)


def list_tenants(engine: Engine) -> list[TenantView]:
    """Every tenant, by id."""
    with engine.connect() as conn:
        rows = conn.execute(select(_T).order_by(_T.c.id)).all()
    return [_tenant(r) for r in rows]


def _tenant(row: Any) -> TenantView:
    return TenantView(id=row.id, name=row.name,
                      limits=TenantLimits.model_validate(row.limits or {}),
                      created_at=_utc(row.created_at))


def create_key(engine: Engine, tenant_id: str, name: str = "",
               limits: TenantLimits | None = None) -> NewApiKey:
    """A new key for the tenant; the returned ``key`` is the only copy of the secret."""
    get_tenant(engine, tenant_id)
    key_id = f"{KEY_PREFIX}{secrets.token_hex(4)}"
    key = f"{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"
    view = ApiKeyView(id=key_id, tenant_id=tenant_id, name=name, created_at=datetime.now(UTC),
                      limits=limits or TenantLimits())
    with engine.begin() as conn:
        conn.execute(insert(_K).values(id=key_id, tenant_id=tenant_id, name=name,
                                       secret_hash=_hash(key), created_at=view.created_at,
                                       limits=_limits_json(view.limits)))
    return NewApiKey(key=key, view=view)


def set_key_limits(engine: Engine, key_id: str, limits: TenantLimits) -> ApiKeyView:
    """Replace a key's own limits (workers read them afresh); NotFoundError if unknown."""
    key_id = _public_id(key_id)
    with engine.begin() as conn:
        row = conn.execute(select(_K.c.tenant_id).where(_K.c.id == key_id)).first()
        n = conn.execute(update(_K).where(_K.c.id == key_id)
                         .values(limits=_limits_json(limits))).rowcount
        if row is not None:
            wake_paused(conn, row.tenant_id, key_id)
    if not n:
        raise NotFoundError(f"no API key {key_id!r}")
    return next(k for k in list_keys(engine) if k.id == key_id)


def list_keys(engine: Engine, tenant_id: str | None = None) -> list[ApiKeyView]:
    """Keys (of one tenant, or all), newest first; never their secrets."""
    stmt = select(_K).order_by(_K.c.created_at.desc(), _K.c.id)
    if tenant_id is not None:
        stmt = stmt.where(_K.c.tenant_id == tenant_id)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [ApiKeyView(id=r.id, tenant_id=r.tenant_id, name=r.name,
                       limits=TenantLimits.model_validate(r.limits or {}),
                       created_at=_utc(r.created_at), revoked_at=_utc(r.revoked_at))
            for r in rows]


def _public_id(key_id: str) -> str:
    """``bya_<id>`` from either the public id or a whole key."""
    return key_id if key_id.count("_") <= 1 else "_".join(key_id.split("_")[:2])


def revoke_key(engine: Engine, key_id: str) -> None:
    """Refuse the key from now on (idempotent); NotFoundError for an unknown id."""
    key_id = _public_id(key_id)
    with engine.begin() as conn:
        if conn.execute(select(_K.c.id).where(_K.c.id == key_id)).first() is None:
            raise NotFoundError(f"no API key {key_id!r}")
        conn.execute(update(_K).where(_K.c.id == key_id, _K.c.revoked_at.is_(None))
                     .values(revoked_at=datetime.now(UTC)))


def authenticate(engine: Engine, key: str) -> Identity:
    """The tenant (and key id) of an active key; AccessDeniedError for any other string (one
    message for unknown, malformed and revoked keys, so a probe learns nothing)."""
    return authorize(engine, key).identity


# The key, its limits and its tenant's in one primary-key read (built once; see storage.jobs)
_ACCESS = (select(_K.c.tenant_id, _K.c.secret_hash, _K.c.revoked_at,
                  _K.c.limits.label("key_limits"), _T.c.limits.label("tenant_limits"))
           .join(_T, _T.c.id == _K.c.tenant_id).where(_K.c.id == bindparam("k_id")))


def authorize(engine: Engine, key: str) -> Access:
    """``authenticate``, with the limits a submission must fit (the tenant's and the key's
    own), in one read without a transaction: a submit with a key asks the database once
    before its insert."""
    return read_access(engine, key)[0]


@dataclass(frozen=True)
class AccessCheck:
    """The rows an ``Access`` was read from, as read: the tenant's limits and, for a key, the
    key's tenant and limits (JSON text). ``access_holds`` checks them in a statement."""

    tenant_id: str
    tenant_limits: str
    key_id: str | None = None
    key_limits: str = "null"

    def params(self) -> dict[str, Any]:
        """The bound values of ``access_holds``."""
        return {"a_tenant": self.tenant_id, "a_tenant_limits": self.tenant_limits,
                "a_key": self.key_id, "a_key_limits": self.key_limits}


class StaleAccessError(Exception):
    """The tenant's or the key's row is no longer as its ``AccessCheck`` says (new limits, a
    revoked key): nothing was written; read the access again."""


def read_access(engine: Engine, key: str | None) -> tuple[Access, AccessCheck | None]:
    """The caller's access (``authorize``; the ``default`` tenant's for no key) and the
    check of the rows it was read from (None if their limits hold text PostgreSQL's jsonb
    cannot compare: a NUL, a lone surrogate). One read without a transaction."""
    if key is None:
        with without_transaction(engine) as conn:
            row = conn.execute(_TENANT, {"t_id": DEFAULT_TENANT}).first()
        if row is None:
            raise NotFoundError(f"no tenant {DEFAULT_TENANT!r}")
        return (Access(tenant_limits=TenantLimits.model_validate(row.limits or {})),
                _check(DEFAULT_TENANT, row.limits))
    denied = AccessDeniedError("invalid or revoked API key")
    parts = key.split("_")
    if len(parts) < 3 or not key.startswith(KEY_PREFIX):
        raise denied
    key_id = f"{parts[0]}_{parts[1]}"
    with without_transaction(engine) as conn:
        row = conn.execute(_ACCESS, {"k_id": key_id}).first()
    if row is None or row.revoked_at is not None:
        raise denied
    if not hmac.compare_digest(row.secret_hash, _hash(key)):
        raise denied
    tenant = str(row.tenant_id)
    access = Access(identity=Identity(tenant_id=tenant, key_id=key_id),
                    tenant_limits=TenantLimits.model_validate(row.tenant_limits or {}),
                    key_limits=TenantLimits.model_validate(row.key_limits or {}))
    return access, _check(tenant, row.tenant_limits, key_id, row.key_limits)


def _check(tenant_id: str, tenant_limits: Any, key_id: str | None = None,
           key_limits: Any = None) -> AccessCheck | None:
    """The check of the limits as read; None for limits whose JSON a statement cannot
    compare (a number beyond a float's range, a NUL, a lone surrogate): read every time."""
    try:
        texts = [json.dumps(limits, ensure_ascii=False, allow_nan=False)
                 for limits in (tenant_limits, key_limits)]
    except ValueError:  # 1e400 reads as inf, which JSON cannot spell
        return None
    for text in texts:
        try:
            text.encode()
        except UnicodeEncodeError:  # a lone surrogate
            return None
        if "\\u0000" in text:  # jsonb holds no NUL
            return None
    return AccessCheck(tenant_id=tenant_id, tenant_limits=texts[0], key_id=key_id,
                       key_limits=texts[1])


def _as_read(column: Any, param: str) -> ColumnElement[bool]:
    """PostgreSQL: ``column`` (JSON) holds what was read as the JSON text ``param`` (jsonb
    compares values, not spelling; SQL NULL and JSON null both read as None)."""
    return (func.coalesce(cast(column, JSONB), cast(literal("null"), JSONB))
            == cast(bindparam(param, type_=String), JSONB))


def access_holds() -> ColumnElement[bool]:
    """PostgreSQL: true while the rows an ``AccessCheck`` was read from are as it says: the
    tenant's limits and, for a key, the key is not revoked, is its tenant's, and its limits
    are unchanged. Bound with ``AccessCheck.params``."""
    tenant = exists().where(_T.c.id == bindparam("a_tenant", type_=String),
                            _as_read(_T.c.limits, "a_tenant_limits"))
    key = exists().where(_K.c.id == bindparam("a_key", type_=String),
                         _K.c.tenant_id == bindparam("a_tenant", type_=String),
                         _K.c.revoked_at.is_(None), _as_read(_K.c.limits, "a_key_limits"))
    return tenant & or_(bindparam("a_key", type_=String).is_(None), key)


def _utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def wake_paused(conn: Connection, tenant_id: str, key_id: str | None = None) -> int:
    """Make the requests paused by a spent budget due now (their budget changed): the
    reconciler publishes them again and the next reservation decides. Returns how many."""
    jobs = select(JOBS.c.id).where(JOBS.c.tenant_id == tenant_id)
    if key_id is not None:
        jobs = jobs.where(JOBS.c.api_key_id == key_id)
    stmt = (update(REQUESTS)
            .where(state_is(RequestState.DEFERRED),
                   REQUESTS.c.error_code == BUDGET_PAUSED, REQUESTS.c.job_id.in_(jobs))
            .values(not_before=time.time()))
    return int(conn.execute(stmt).rowcount or 0)


def wake_scope(engine: Engine, scope: QuotaScope) -> int:
    """``wake_paused`` for a quota scope, in a transaction of its own."""
    with engine.begin() as conn:
        return wake_paused(conn, scope.tenant_id, scope.key_id)


def lock_tenant(conn: Connection, tenant_id: str) -> None:
    """Serialise submissions of one tenant until ``conn``'s transaction ends, so two of them
    cannot both pass a ``max_queued`` check. ``FOR NO KEY UPDATE`` on PostgreSQL: it does not
    conflict with the key-share lock a job's foreign key takes. SQLite has one writer at a time
    already, and SQLAlchemy renders nothing there."""
    conn.execute(select(_T.c.id).where(_T.c.id == tenant_id).with_for_update(key_share=True))


def live_requests(conn: Connection, tenant_id: str, key_id: str | None = None) -> int:
    """The tenant's (or one of its keys') requests not finished yet: queued, deferred or
    running, including those ``conn``'s own transaction has inserted (their job's ``total``
    is set before the check).

    Read from the jobs' counters (each unfinished job's total less its ended requests, moved
    in the same transactions as the rows), so a submission does not count a large backlog
    row by row while it holds the tenant's lock.
    """
    done = JOBS.c.succeeded + JOBS.c.failed + JOBS.c.cancelled + JOBS.c.expired
    stmt = (select(func.coalesce(func.sum(JOBS.c.total - done), 0))
            .where(JOBS.c.tenant_id == tenant_id,
                   JOBS.c.status.not_in([s.value for s in TERMINAL_JOB_STATUSES])))
    if key_id is not None:
        stmt = stmt.where(JOBS.c.api_key_id == key_id)
    return int(conn.execute(stmt).scalar() or 0)
