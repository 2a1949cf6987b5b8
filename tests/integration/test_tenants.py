"""Tenants are walled off: a key sees its own jobs only, and a revoked key is refused at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from producers import Producer
from schemas.errors import AccessDeniedError, NotFoundError
from storage import make_engine
from storage.tenants import create_key, create_tenant, list_keys, revoke_key
from tests.stack import Stack


def _producer(stack: Stack, key: str | None, *, required: bool = False) -> Producer:
    update: dict[str, object] = {"api_key": None if key is None else SecretStr(key),
                                 "require_api_key": required}
    return Producer(stack.settings.model_copy(update=update))


@pytest.fixture
def keys(stack: Stack) -> dict[str, str]:
    engine = make_engine(stack.settings.database_url)
    for tenant in ("acme", "globex"):
        create_tenant(engine, tenant)
    made = {t: create_key(engine, t, "test").key for t in ("acme", "globex")}
    engine.dispose()
    return made


def test_a_tenant_cannot_see_touch_or_read_another_tenants_job(
        stack: Stack, keys: dict[str, str]) -> None:
    acme, globex = _producer(stack, keys["acme"]), _producer(stack, keys["globex"])
    job = acme.submit(["hello"], model="small")
    missing = "batch_000000000000000000000000"

    assert job.tenant_id == "acme"
    assert acme.status(job.id).id == job.id
    for attempt in (lambda j: globex.status(j), lambda j: list(globex.results(j)),
                    lambda j: globex.cancel(j)):
        with pytest.raises(NotFoundError) as foreign:
            attempt(job.id)
        with pytest.raises(NotFoundError) as absent:
            attempt(missing)
        assert str(foreign.value) == str(absent.value).replace(missing, job.id)
    assert acme.status(job.id).status.value == "in_progress"  # globex's cancel changed nothing
    for p in (acme, globex):
        p.close()


def test_a_revoked_key_is_refused_on_the_next_call(stack: Stack, keys: dict[str, str]) -> None:
    acme = _producer(stack, keys["acme"])
    job = acme.submit(["hello"], model="small")
    engine = make_engine(stack.settings.database_url)
    [key] = list_keys(engine, "acme")

    revoke_key(engine, key.id)

    with pytest.raises(AccessDeniedError):
        acme.status(job.id)
    with pytest.raises(AccessDeniedError):
        acme.submit(["again"], model="small")
    assert not list_keys(engine, "acme")[0].active
    acme.close()
    engine.dispose()


def test_unknown_keys_are_refused_and_no_key_is_the_default_tenant(
        stack: Stack, keys: dict[str, str]) -> None:
    forged = keys["acme"][:-4] + "AAAA"
    with pytest.raises(AccessDeniedError):
        _producer(stack, forged).status("batch_x")
    with pytest.raises(AccessDeniedError):
        _producer(stack, "sk-not-ours").status("batch_x")
    with pytest.raises(AccessDeniedError, match="required"):
        _producer(stack, None, required=True).submit(["hi"], model="small")

    anonymous = _producer(stack, None)
    job = anonymous.submit(["hi"], model="small")
    assert job.tenant_id == "default"
    with pytest.raises(NotFoundError):
        _producer(stack, keys["acme"]).status(job.id)
    anonymous.close()


def test_keys_are_stored_hashed(stack: Stack, keys: dict[str, str], tmp_path: Path) -> None:
    engine = make_engine(stack.settings.database_url)
    with engine.connect() as conn:
        stored = " ".join(str(v) for row in conn.exec_driver_sql("SELECT * FROM api_keys")
                          for v in row)
    engine.dispose()
    assert all(key.startswith("bya_") for key in keys.values())
    assert not any(key in stored or key.split("_", 2)[2] in stored for key in keys.values())


def test_the_model_allow_list_and_max_queued_are_checked_at_submit(stack: Stack) -> None:
    from schemas.errors import InputError
    from schemas.tenants import TenantLimits

    engine = make_engine(stack.settings.database_url)
    create_tenant(engine, "capped", limits=TenantLimits(models=["small-alias"], max_queued=5))
    capped = _producer(stack, create_key(engine, "capped").key)

    with pytest.raises(InputError, match=r"line 2: model 'large' is not allowed for tenant "
                                         r"'capped' \(allowed: small, small-alias\)"):
        capped.submit([{"model": "small", "messages": [{"role": "user", "content": "a"}]},
                       {"model": "large", "messages": [{"role": "user", "content": "b"}]}])
    first = capped.submit(["a", "b", "c"], model="small")
    with pytest.raises(InputError, match="may have 5 unfinished requests; it has 3 and this "
                                         "job adds 3"):
        capped.submit(["d", "e", "f"], model="small")
    second = capped.submit(["d", "e"], model="small")

    assert (first.total, second.total) == (3, 2)
    with engine.connect() as conn:  # the refused job left nothing behind
        jobs = conn.exec_driver_sql("SELECT count(*) FROM jobs WHERE tenant_id = 'capped'")
        assert jobs.scalar() == 2
    capped.close()
    engine.dispose()
