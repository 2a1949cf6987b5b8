"""Every cent accounted: request costs, job totals and reports agree exactly after retries and
duplicate deliveries, and a report never shows another tenant's spend."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from producers import Producer
from routing.catalog import load_catalog
from routing.pricing import cost_of
from schemas.chat import Usage
from schemas.jobs import JobStatus
from schemas.keys import Tier
from storage import make_engine
from storage.models import REQUESTS
from storage.reports import ReportFilter, spend
from storage.tenants import create_key, create_tenant
from tests.helpers import ROOT
from tests.stack import Stack


def _report(stack: Stack, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchyard", "--api-key", key, "report", *args],
                          env=stack.env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_costs_add_up_exactly_after_retries_and_duplicate_deliveries(stack: Stack) -> None:
    engine = make_engine(stack.settings.database_url)
    keys = {}
    for tenant in ("acme", "globex"):
        create_tenant(engine, tenant)
        keys[tenant] = create_key(engine, tenant).key
    httpx.post(f"{stack.mock_url}/_mock/config", json={"error_rate": 0.25, "seed": 5})
    for _ in range(2):
        stack.start_worker(BATCHYARD_WORKER__MAX_ATTEMPTS="20")
    producers = {t: Producer(stack.settings.model_copy(update={"api_key": SecretStr(k)}))
                 for t, k in keys.items()}
    jobs = [producers["acme"].submit([f"q{i}" for i in range(60)], model="small"),
            producers["acme"].submit([f"r{i}" for i in range(40)], model="large"),
            producers["globex"].submit([f"s{i}" for i in range(30)], model="small")]
    for job in jobs:  # every request is delivered (at least) twice more
        for _ in range(2):
            producers["acme"].publisher.publish(job.id, Tier.STANDARD, range(job.total), 7)

    done = [producers[j.tenant_id].wait(j.id, timeout=240) for j in jobs]

    assert all(j.status is JobStatus.COMPLETED and j.counts.get("succeeded") == j.total
               for j in done)
    assert httpx.get(f"{stack.mock_url}/_mock/stats").json()["total"] > 130  # retries ran
    catalog = load_catalog(stack.settings.config)
    with engine.connect() as conn:
        rows = conn.execute(select(REQUESTS)).all()
    for row in rows:  # each request charged once, at its deployment's price, exactly
        usage = Usage(prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens,
                      cached_tokens=row.cached_tokens)
        assert row.cost == cost_of(usage, catalog.deployments[row.deployment].pricing)
    for job in done:
        assert job.cost == sum(r.cost for r in rows if r.job_id == job.id) > 0
    report_total = sum(r.cost for r in spend(engine, ReportFilter()))
    assert report_total == sum(j.cost for j in done)

    mine = json.loads(_report(stack, keys["acme"], "--format", "json").stdout)
    foreign_job = _report(stack, keys["acme"], "--job", done[2].id)
    foreign_tenant = _report(stack, keys["globex"], "--tenant", "acme")
    assert Decimal(mine["totals"]["cost"]) == done[0].cost + done[1].cost
    assert {r["tenant"] for r in mine["spend"]} == {"acme"}
    assert mine["totals"]["requests"] == 100
    assert foreign_job.returncode == 2 and f"no job '{done[2].id}'" in foreign_job.stderr
    assert foreign_tenant.returncode == 2 and "no tenant 'acme'" in foreign_tenant.stderr
    for p in producers.values():
        p.close()
    engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_report_csv_and_plot(stack: Stack, tmp_path: object) -> None:
    stack.start_worker()
    job = stack.producer.submit([f"q{i}" for i in range(12)], model="small")
    stack.producer.wait(job.id, timeout=120)
    png = f"{tmp_path}/spend.png"

    out = subprocess.run([sys.executable, "-m", "batchyard", "report", "--format", "csv",
                          "--plot", png], env=stack.env, cwd=ROOT, capture_output=True,
                         text=True, timeout=120)

    assert out.returncode == 0, out.stderr
    header, *lines = out.stdout.splitlines()
    assert header.startswith("tenant,model,deployment,provider,period,requests")
    assert len(lines) == 1 and lines[0].startswith("default,small,mock-a,openai,")
    with open(png, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_requests_are_priced_at_the_price_in_force_when_they_finish(stack: Stack) -> None:
    from tests.stack import CATALOG

    dated = CATALOG.replace(
        '    pricing: {{input: "0.15", output: "0.60", cached_input: "0.075"}}\n',
        '    pricing: {{input: "0.15", output: "0.60", cached_input: "0.075"}}\n'
        '    price_history:\n'
        '      - {{effective_from: 2020-01-01, input: "3", output: "7"}}\n'
        '      - {{effective_from: 2999-01-01, input: "100", output: "100"}}\n', 1)
    assert dated != CATALOG
    path = stack.tmp / "dated.yaml"
    path.write_text(dated.format(url=stack.mock_url))
    stack.start_worker(BATCHYARD_CONFIG=str(path))
    job = stack.producer.submit([f"q{i}" for i in range(10)], model="small")

    final = stack.producer.wait(job.id, timeout=120)

    in_force = load_catalog(path).deployments["mock-a"].price_history[0]
    expected = cost_of(Usage(prompt_tokens=final.prompt_tokens,
                             completion_tokens=final.completion_tokens), in_force)
    assert final.cost == expected > 0
