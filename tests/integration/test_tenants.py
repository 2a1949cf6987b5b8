"""Tenants are walled off: a key sees its own jobs only, and a revoked key is refused at once."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, func, select

from producers import Producer
from schemas.errors import AccessDeniedError, InputError, NotFoundError
from schemas.tenants import TenantLimits
from storage import make_engine
from storage.models import JOBS
from storage.tenants import (
    create_key,
    create_tenant,
    list_keys,
    revoke_key,
    set_key_limits,
    set_limits,
)
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
    engine = make_engine(stack.settings.database_url)
    create_tenant(engine, "capped", limits=TenantLimits(models=["small-alias"], max_queued=5))
    capped = _producer(stack, create_key(engine, "capped").key)

    with pytest.raises(InputError, match=r"line 2: model 'large' is not allowed for tenant "
                                         r"'capped' \(allowed: small, small-alias\)"):
        capped.submit([{"model": "small", "messages": [{"role": "user", "content": "a"}]},
                       {"model": "large", "messages": [{"role": "user", "content": "b"}]}])
    first = capped.submit(["a", "b", "c"], model="small")
    with pytest.raises(InputError, match="tenant 'capped' may have 5 unfinished requests; "
                                         "this job would make it 6"):
        capped.submit(["d", "e", "f"], model="small")
    second = capped.submit(["d", "e"], model="small")

    assert (first.total, second.total) == (3, 2)
    with engine.connect() as conn:  # the refused job left nothing behind
        jobs = conn.exec_driver_sql("SELECT count(*) FROM jobs WHERE tenant_id = 'capped'")
        assert jobs.scalar() == 2
    capped.close()
    engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_concurrent_submits_cannot_both_squeeze_under_max_queued(stack: Stack) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from schemas.errors import InputError
    from schemas.tenants import TenantLimits

    engine = make_engine(stack.settings.database_url)
    create_tenant(engine, "racer", limits=TenantLimits(max_queued=5))
    key = create_key(engine, "racer").key
    producers = [_producer(stack, key) for _ in range(2)]
    outcomes = []
    for _ in range(6):  # each round: two jobs of 3 at once, room for one of them
        with ThreadPoolExecutor(2) as pool:
            tries = [pool.submit(p.submit, ["a", "b", "c"], model="small") for p in producers]
            done = [t.exception() or t.result() for t in tries]
        accepted = [d for d in done if not isinstance(d, BaseException)]
        refused = [d for d in done if isinstance(d, InputError)]
        outcomes.append((len(accepted), len(refused)))
        for job in accepted:  # cancelled rows are finished: the next round starts empty
            producers[0].cancel(job.id)

    assert outcomes == [(1, 1)] * 6
    for p in producers:
        p.close()
    engine.dispose()


def test_a_keys_own_limits_narrow_its_tenants_at_submit(stack: Stack) -> None:
    from schemas.errors import InputError
    from schemas.tenants import TenantLimits
    from storage.tenants import set_key_limits

    engine = make_engine(stack.settings.database_url)
    create_tenant(engine, "wide", limits=TenantLimits(max_queued=100))
    narrow = create_key(engine, "wide", "ci", TenantLimits(models=["small"], max_queued=4))
    other = create_key(engine, "wide", "batch").key
    ci, batch = _producer(stack, narrow.key), _producer(stack, other)

    with pytest.raises(InputError, match="'large'"):
        ci.submit(["x"], model="large")
    ci.submit(["a", "b", "c"], model="small")
    with pytest.raises(InputError, match=f"API key '{narrow.view.id}' may have 4 unfinished "
                                         "requests; this job would make it 5"):
        ci.submit(["d", "e"], model="small")
    assert batch.submit(["x", "y"], model="large").total == 2  # the other key is not bound

    set_key_limits(engine, narrow.view.id, TenantLimits())  # lifted: only the tenant's apply
    assert ci.submit(["d", "e"], model="large").total == 2
    assert [k.limits for k in list_keys(engine, "wide") if k.id == narrow.view.id] == [
        TenantLimits()]
    for p in (ci, batch):
        p.close()
    engine.dispose()


def _jobs_of(engine: Engine, tenant: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(JOBS)
                                .where(JOBS.c.tenant_id == tenant)).scalar_one())


@pytest.mark.parametrize("scope", ["tenant", "key"])
def test_new_limits_apply_to_the_very_next_submit(stack: Stack, scope: str) -> None:
    """On PostgreSQL a submit reuses the access the last one read, checked by the job's
    insert: a change of limits in between must still refuse the next submit, and leave
    nothing behind."""
    engine = make_engine(stack.settings.database_url)
    create_tenant(engine, "shifty")
    key = create_key(engine, "shifty")
    shifty = _producer(stack, key.key)
    shifty.submit(["a"], model="small", tier="realtime")  # the access is read here
    only_large = TenantLimits(models=["large"])

    if scope == "tenant":
        set_limits(engine, "shifty", only_large)
    else:
        set_key_limits(engine, key.view.id, only_large)

    for source in (["b"], iter(["b"])):  # a list can be read again; an iterator cannot
        with pytest.raises(InputError, match="model 'small' is not allowed"):
            shifty.submit(source, model="small", tier="realtime")
    assert _jobs_of(engine, "shifty") == 1
    assert shifty.submit(["c"], model="large", tier="realtime").total == 1
    shifty.close()
    engine.dispose()


def test_the_default_tenants_new_limits_apply_to_the_next_keyless_submit(stack: Stack) -> None:
    engine = make_engine(stack.settings.database_url)
    anonymous = _producer(stack, None)
    anonymous.submit(["a"], model="small", tier="realtime")

    set_limits(engine, "default", TenantLimits(models=["large"]))

    with pytest.raises(InputError, match="model 'small' is not allowed for tenant 'default'"):
        anonymous.submit(["b"], model="small", tier="realtime")
    assert _jobs_of(engine, "default") == 1
    anonymous.close()
    engine.dispose()


def test_a_loosened_limit_applies_to_the_very_next_submit(stack: Stack) -> None:
    engine = make_engine(stack.settings.database_url)
    create_tenant(engine, "growing", limits=TenantLimits(models=["small"]))
    growing = _producer(stack, create_key(engine, "growing").key)
    growing.submit(["a"], model="small", tier="realtime")  # the access is read here
    both = [{"model": m, "messages": [{"role": "user", "content": m}]} for m in ("small", "large")]
    with pytest.raises(InputError, match="model 'large' is not allowed"):
        growing.submit(both, tier="realtime")

    set_limits(engine, "growing", TenantLimits(models=["small", "large"]))

    assert growing.submit(both, tier="realtime").total == 2
    growing.close()
    engine.dispose()


def test_a_submit_from_a_pipe_after_a_change_of_limits_reads_it_once(
        stack: Stack, tmp_path: Path) -> None:
    """A pipe cannot be read twice: its submit reads the access first, as it always did."""
    engine = make_engine(stack.settings.database_url)
    anonymous = _producer(stack, None)
    anonymous.submit(["a"], model="small", tier="realtime")
    set_limits(engine, "default", TenantLimits(rpm=1000))  # the access read above is stale
    fifo = tmp_path / "input.jsonl"
    os.mkfifo(fifo)
    lines = "".join(json.dumps({"custom_id": f"r{i}", "method": "POST",
                                "url": "/v1/chat/completions",
                                "body": {"model": "small",
                                         "messages": [{"role": "user", "content": "hi"}]}}) + "\n"
                    for i in range(3))
    writer = threading.Thread(target=fifo.write_text, args=(lines,), daemon=True)
    writer.start()
    stored: list[object] = []
    submit = threading.Thread(target=lambda: stored.append(anonymous.submit(str(fifo))),
                              daemon=True)  # a second open of the pipe would never return
    submit.start()
    submit.join(60)

    assert [getattr(job, "total", None) for job in stored] == [3]
    anonymous.close()
    engine.dispose()
