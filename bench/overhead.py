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


def _samples(mock: MockProcess, folder: Path, db_kind: str, count: int) -> list[dict[str, float]]:
    """``count`` one-request realtime jobs in a row on a fresh stack; each one's stages."""
    mock.configure(latency_ms=0)
    with stack(db_kind, mock.url, folder) as s:
        s.start_workers(1)
        published = TimedPublish(s.producer.publisher)
        for i in range(10):  # warm-up: connections, prepared statements, lazy imports
            _one(s, published, -i)
        return [_one(s, published, i) for i in range(count)]


def overhead(mock: MockProcess, folder: Path, *, dbs: tuple[str, ...], count: int,
             rounds: int = 1) -> list[dict[str, Any]]:
    """``rounds`` rounds of ``count`` jobs per database, the databases alternating in order
    from one round to the next (each round on a fresh stack); per database, p50 and p99 of
    each stage over every round's jobs, and each round's own p50 of ``added``.

    The machine's speed swings within minutes (docs/PERFORMANCE.md, sessions 14 and 15: 4.3
    and 6.0 ms p50 in two runs a minute apart), so one short round is a sample of one moment;
    rounds spread over the section, both databases in each, are what its median stands for.
    """
    samples: dict[str, list[dict[str, float]]] = {db: [] for db in dbs}
    per_round: dict[str, list[float]] = {db: [] for db in dbs}
    for r in range(rounds):
        for db in dbs if r % 2 == 0 else tuple(reversed(dbs)):
            got = _samples(mock, folder / f"overhead-{db}-{r}", db, count)
            samples[db] += got
            per_round[db].append(round(percentile([g["added"] for g in got], 0.5), 2))
    results = []
    for db in dbs:
        result: dict[str, Any] = {"db": db, "requests": len(samples[db]), "rounds": rounds,
                                  "round_added_p50_ms": per_round[db]}
        for name in STAGES:
            values = [sample[name] for sample in samples[db]]
            result[f"{name}_p50_ms"] = round(percentile(values, 0.5), 2)
            result[f"{name}_p99_ms"] = round(percentile(values, 0.99), 2)
        results.append(result)
    return results
