"""A job's insert checks the access its producer did not read again (PostgreSQL).

``read_access`` returns the rows an access was read from, as read; ``create_job(still=)``
writes the job only while they are unchanged, in its one statement or in its transaction.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Connection, Engine, func, select, text

from schemas.keys import Tier
from schemas.tenants import TenantLimits
from storage import NewJob, create_job, make_engine
from storage.direct import ThreadConnections
from storage.models import JOBS, REQUESTS
from storage.tenants import (
    AccessCheck,
    StaleAccessError,
    create_key,
    create_tenant,
    read_access,
    revoke_key,
    set_key_limits,
    set_limits,
)

ROWS = [("c0", "m", '{"messages":[]}'), ("c1", "m", '{"messages":[]}')]


@pytest.fixture
def engine(postgres_url: str) -> Engine:
    return make_engine(postgres_url)


def _none(_conn: Connection | None) -> None:
    pass


WAYS = ["statement", "direct", "transaction"]
"""How the job is inserted: its one statement through the engine, the same on a connection
of its own (storage/direct.py), or a transaction of several statements (a larger job)."""


def _insert(engine: Engine, job_id: str, still: AccessCheck, *, way: str = "statement",
            tenant: str = "default", key: str | None = None) -> int:
    direct = ThreadConnections(engine, "batchyard-test") if way == "direct" else None
    try:
        return create_job(engine, NewJob(job_id, Tier.REALTIME, tenant_id=tenant,
                                         api_key_id=key),
                          ROWS, batch=1 if way == "transaction" else 10, check=_none,
                          check_reads=False, still=still, direct=direct)
    finally:
        if direct is not None:
            direct.close()


def _rows(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(JOBS)).scalar_one(),
                conn.execute(select(func.count()).select_from(REQUESTS)).scalar_one())


@pytest.mark.parametrize("way", WAYS)
def test_a_job_is_written_while_the_access_it_was_checked_with_holds(engine: Engine,
                                                                      way: str) -> None:
    _, still = read_access(engine, None)

    assert _insert(engine, "batch_a", still, way=way) == 2
    assert _rows(engine) == (1, 2)


def _limits(engine: Engine, tenant: str, key_id: str) -> None:
    set_limits(engine, tenant, TenantLimits(rpm=10))


def _key_limits(engine: Engine, tenant: str, key_id: str) -> None:
    set_key_limits(engine, key_id, TenantLimits(models=["m"]))


def _revoked(engine: Engine, tenant: str, key_id: str) -> None:
    revoke_key(engine, key_id)


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("change", [_limits, _key_limits, _revoked])
def test_nothing_is_written_once_the_tenant_or_key_changed(
        engine: Engine, way: str, change: Callable[[Engine, str, str], None]) -> None:
    create_tenant(engine, "acme")
    key = create_key(engine, "acme")
    _, still = read_access(engine, key.key)
    assert still.key_id == key.view.id

    change(engine, "acme", key.view.id)

    with pytest.raises(StaleAccessError):
        _insert(engine, "batch_a", still, way=way, tenant="acme", key=key.view.id)
    assert _rows(engine) == (0, 0)


def test_the_default_tenants_new_limits_make_its_access_stale(engine: Engine) -> None:
    _, still = read_access(engine, None)
    set_limits(engine, "default", TenantLimits(max_in_flight=3))

    with pytest.raises(StaleAccessError):
        _insert(engine, "batch_a", still)
    _, fresh = read_access(engine, None)
    assert _insert(engine, "batch_a", fresh) == 2


def test_limits_jsonb_cannot_compare_are_read_every_time(engine: Engine) -> None:
    set_limits(engine, "default", TenantLimits(models=["small\u0000"]))

    access, still = read_access(engine, None)

    assert access.tenant_limits.models == ["small\u0000"]
    assert still is None  # no check: the producer reads the access on each submit


def test_limits_beyond_a_floats_range_are_read_every_time(engine: Engine) -> None:
    """1e400 (written by hand) reads as inf, which JSON cannot spell: a check would fail
    with an error on every submit."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE tenants SET limits = CAST(:j AS json) WHERE id = 'default'"),
                     {"j": '{"budget": {"amount": "1", "period": "rolling", "rolling_s": 1e400}}'})

    access, still = read_access(engine, None)

    assert access.tenant_limits.budget is not None
    assert still is None
