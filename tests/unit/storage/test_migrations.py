"""The Alembic migrations build exactly the tables the code uses, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from storage import make_engine, upgrade
from storage.models import Base


def test_migrations_match_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)  # a second upgrade is a no-op
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        tables = set(inspect(conn).get_table_names())
    assert diff == []
    assert {"jobs", "requests", "alembic_version"} <= tables


def test_upgrading_from_0003_keeps_jobs_and_keys_and_gives_them_no_key_limits(
        database_url: str) -> None:
    from datetime import UTC, datetime

    from alembic import command
    from sqlalchemy import text

    from storage.migrate import alembic_config
    from storage.tenants import list_keys

    engine = make_engine(database_url)
    upgrade(engine, "0003")
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES ('t', 't', :n)"),
                     {"n": now})
        conn.execute(text("INSERT INTO api_keys (id, tenant_id, name, secret_hash, created_at)"
                          " VALUES ('bya_00000000', 't', 'old', 'x', :n)"), {"n": now})
        conn.execute(text("INSERT INTO jobs (id, tenant_id, status, tier, total, succeeded, "
                          "failed, cancelled, expired, prompt_tokens, completion_tokens, cost, "
                          "metadata, input_name, created_at) VALUES ('batch_old', 't', "
                          "'completed', 'bulk', 0, 0, 0, 0, 0, 0, 0, 0, '{}', '', :n)"),
                     {"n": now})

    upgrade(engine)
    with engine.connect() as conn:
        job_key = conn.execute(text("SELECT api_key_id FROM jobs WHERE id = 'batch_old'"))
        assert job_key.scalar() is None
    [key] = list_keys(engine, "t")
    assert key.name == "old" and key.limits.model_dump(exclude_defaults=True) == {}

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:  # and back: 0004 can be undone without losing the rest
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM api_keys")).scalar() == 1
    engine.dispose()


def test_downgrading_0007_stores_the_data_of_events_written_without_it(
        postgres_url: str) -> None:
    import time

    from alembic import command
    from sqlalchemy import select

    from schemas.jobs import JobOptions
    from schemas.keys import Tier
    from schemas.outcomes import Outcome, OutcomeKind
    from storage import NewJob, claim, create_job, record
    from storage.events import job_events
    from storage.migrate import alembic_config
    from storage.models import EVENTS

    engine = make_engine(postgres_url)
    create_job(engine, NewJob("batch_down", Tier.BULK,
                              JobOptions(webhook_url="https://hooks.example.com/x")),
               [("c0", "m", '{"model":"m","messages":[]}')], batch=10, check=lambda conn: None)
    claim(engine, "batch_down", [0], "w1", lease_s=60, now=time.time())
    record(engine, [Outcome(kind=OutcomeKind.SUCCEEDED, job_id="batch_down", seq=0,
                            claim="w1", status_code=200, response="{}")])
    read = job_events(engine, "batch_down")
    with engine.connect() as conn:
        assert conn.execute(select(EVENTS.c.payload)).scalar_one() is None  # built when read

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0006")

    with engine.connect() as conn:
        stored = conn.execute(select(EVENTS.c.payload)).scalar_one()
    assert [("job.completed", stored)] == [(kind.value, data) for kind, data in read]
    engine.dispose()
