"""Overhead: the time batchyard adds to one request at low load, from a realtime-tier job.

One-request jobs are submitted one after another (nothing else runs) and the mock answers at
once. ``added`` is the headline: ``Producer.submit`` called → ``Producer.wait`` returned the
job done (woken by the worker's announcement of its end, then reading its status: what a user
of the SDK sees), minus the upstream call as the worker's client timed it.
It splits into stages, each from clocks on this one machine:

- ``producer``: submit called → its chunk message published (validate, insert, commit, publish);
- ``queue``: published → the claim starts (Redis, Celery's consumer, a feeder thread), as the
  job's ``started_at``, stamped just before the claim's statement;
- ``worker``: the claim starts → the outcome handed to the writer, minus the upstream call (the
  claim, loop hand-off, routing, request building, response parsing, pricing);
- ``write``: → ``wait`` returned (the batched write, its commit, the announcement, the status
  read).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.measure import epoch, percentile
from bench.procs import MockProcess
from bench.stack import MODEL, Stack, stack
from storage.db import without_transaction
from storage.models import JOBS, REQUESTS

__all__ = ["TimedPublish", "overhead"]

STAGES = ("added", "producer", "queue", "worker", "write")


class TimedPublish:
    """Wraps the producer's publisher to note when the last message went out."""

    def __init__(self, publisher: Any) -> None:
        self._inner = publisher.publish
        self.at = 0.0
        publisher.publish = self

    def __call__(self, *args: Any, **kwargs: Any) -> int:
        n: int = self._inner(*args, **kwargs)
        self.at = time.time()
        return n


def _one(s: Stack, published: TimedPublish, i: int) -> dict[str, float]:
    """One realtime request, submitted and waited for as a user would; its stages in ms."""
    started = time.time()
    job = s.producer.submit([{"messages": [{"role": "user", "content": f"ping {i}"}],
                              "max_tokens": 8}], tier="realtime", model=MODEL)
    view = s.producer.wait(job.id, timeout=30)
    seen = time.time()
    if not view.done:
        raise TimeoutError(f"realtime job {job.id} not done in 30 s")
    with without_transaction(s.producer.engine) as conn:
        claimed, written, upstream_ms = conn.execute(
            select(JOBS.c.started_at, REQUESTS.c.finished_at, REQUESTS.c.latency_ms)
            .join(REQUESTS, REQUESTS.c.job_id == JOBS.c.id).where(JOBS.c.id == job.id)).one()
    upstream = float(upstream_ms or 0.0) / 1000
    claimed, written = epoch(claimed), epoch(written)
    stages = {"added": seen - started - upstream, "producer": published.at - started,
              "queue": claimed - published.at, "worker": written - claimed - upstream,
              "write": seen - written}
    return {name: value * 1000 for name, value in stages.items()}


def overhead(mock: MockProcess, folder: Path, *, db_kind: str, count: int) -> dict[str, Any]:
    """``count`` one-request realtime jobs in a row; p50 (and p99) of each stage, in ms."""
    mock.configure(latency_ms=0)
    with stack(db_kind, mock.url, folder / f"overhead-{db_kind}") as s:
        s.start_workers(1)
        published = TimedPublish(s.producer.publisher)
        for i in range(10):  # warm-up: connections, prepared statements, lazy imports
            _one(s, published, -i)
        samples = [_one(s, published, i) for i in range(count)]
    result: dict[str, Any] = {"db": db_kind, "requests": count}
    for name in STAGES:
        values = [sample[name] for sample in samples]
        result[f"{name}_p50_ms"] = round(percentile(values, 0.5), 2)
        result[f"{name}_p99_ms"] = round(percentile(values, 0.99), 2)
    return result
