"""A producer killed in the middle of submitting leaves the whole job or nothing.

The job and all its requests are inserted in one transaction, so a ``batchyard submit`` killed
at any point leaves no job, or the whole job; a job stored but not (fully) published is
published by the reconciler once it is ``dispatch_grace_s`` old.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from schemas.jobs import JobStatus
from schemas.keys import EPOCH_KEY, Tier
from storage import NewJob, create_job
from storage.models import JOBS, REQUESTS
from tests.helpers import ROOT, wait_for
from tests.stack import Stack

LINES = 30_000


def _write(path: Path, n: int) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"custom_id": f"r{i}", "method": "POST",
                                 "url": "/v1/chat/completions",
                                 "body": {"model": "small", "messages": [
                                     {"role": "user", "content": f"question {i}"}]}}) + "\n")
    return path


def _submit(stack: Stack, source: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "batchyard", "submit", str(source)],
                            env=stack.env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def test_a_producer_killed_at_random_points_leaves_whole_jobs_or_nothing(
        stack: Stack, tmp_path: Path) -> None:
    source = _write(tmp_path / "big.jsonl", LINES)
    started = time.monotonic()
    assert _submit(stack, source).wait(120) == 0
    full = time.monotonic() - started
    rng = random.Random(7)

    for moment in sorted(rng.uniform(0.2, full) for _ in range(3)):
        proc = _submit(stack, source)
        time.sleep(moment)  # the fault's moment, not synchronisation
        proc.kill()
        proc.wait()
    proc = _submit(stack, source)  # and once just after its commit, while it publishes
    wait_for(lambda: _job_count(stack) == 2, 60, "the second job's commit")
    proc.kill()
    proc.wait()

    with stack.producer.engine.connect() as conn:
        jobs = conn.execute(select(JOBS.c.id, JOBS.c.status, JOBS.c.total)).all()
        sizes = dict(conn.execute(select(REQUESTS.c.job_id, func.count())
                                  .group_by(REQUESTS.c.job_id)).all())
    assert 2 <= len(jobs) <= 5
    assert all(job.status == JobStatus.IN_PROGRESS for job in jobs)  # none half-made
    assert all(job.total == LINES == sizes[job.id] for job in jobs)
    assert set(sizes) == {job.id for job in jobs}  # no request without its job
    stack.start_worker(BATCHYARD_WORKER__DISPATCH_GRACE_S="1")
    wait_for(lambda: all(_dispatched(stack, job.id) for job in jobs), 60,
             "the reconciler to publish what the killed producers did not")
    for job in jobs:  # no need to run them all
        stack.producer.cancel(job.id)


def _job_count(stack: Stack) -> int:
    with stack.producer.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(JOBS)).scalar_one())


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_job_stored_but_never_published_is_published_by_the_reconciler(stack: Stack) -> None:
    stack.start_worker(BATCHYARD_WORKER__DISPATCH_GRACE_S="1")
    client = redis.Redis.from_url(stack.settings.redis_url)  # past the first pass, which
    wait_for(lambda: client.exists(EPOCH_KEY), 30, "the reconciler's first pass")  # publishes all
    rows = [(f"r{i}", "small", json.dumps({"model": "small", "messages": [
        {"role": "user", "content": f"question {i}"}]})) for i in range(100)]
    # what a producer killed between its commit and its first publish leaves behind
    create_job(stack.producer.engine, NewJob(id="batch_orphan", tier=Tier.STANDARD), rows,
               batch=1000, check=lambda conn: None)

    final = stack.producer.wait("batch_orphan", timeout=60)

    assert final.status is JobStatus.COMPLETED and final.counts["succeeded"] == 100
    wait_for(lambda: _dispatched(stack, "batch_orphan"), 10, "the job marked dispatched")


def _dispatched(stack: Stack, job_id: str) -> bool:
    with stack.producer.engine.connect() as conn:
        return conn.execute(select(JOBS.c.dispatched_at).where(JOBS.c.id == job_id)
                            ).scalar() is not None
