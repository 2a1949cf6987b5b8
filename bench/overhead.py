"""Overhead: the time batchyard adds to one request at low load, from a realtime-tier job.

One-request jobs are submitted one after another (nothing else runs), with the mock answering
at once. For each, three clocks on this one machine:

- ``added``: submit called → result committed and visible to a reader (polled every 1 ms),
  minus the upstream call as the worker's client timed it. This is the headline: queue,
  claim, routing, request building, response parsing, pricing and persistence.
- ``to_upstream``: submit called → the request arrives at the mock (its own clock).
- ``submit``: how long ``Producer.submit`` itself took (validate, insert, publish).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.procs import MockProcess
from bench.stack import MODEL, stack
from storage.models import JOBS, REQUESTS

__all__ = ["overhead", "percentile"]

POLL_S = 0.001


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _one(s: Any, i: int) -> tuple[float, float, float]:
    """Submit one realtime request; (submit s, seen s, upstream ms) measured from the call."""
    engine = s.producer.engine
    started = time.time()
    job = s.producer.submit([{"messages": [{"role": "user", "content": f"ping {i}"}],
                              "max_tokens": 8}], tier="realtime", model=MODEL)
    submitted = time.time()
    query = select(JOBS.c.completed_at).where(JOBS.c.id == job.id)
    deadline = started + 30
    with engine.connect() as conn:
        while conn.execute(query).scalar() is None:
            conn.rollback()  # a fresh snapshot for the next poll
            if time.time() > deadline:
                raise TimeoutError(f"realtime job {job.id} not done in 30 s")
            time.sleep(POLL_S)
        seen = time.time()
        latency = conn.execute(select(REQUESTS.c.latency_ms)
                               .where(REQUESTS.c.job_id == job.id)).scalar()
    return submitted - started, seen - started, float(latency or 0.0)


def overhead(mock: MockProcess, folder: Path, *, db_kind: str, count: int) -> dict[str, Any]:
    """``count`` one-request realtime jobs in a row; p50/p99 of each clock, in ms."""
    mock.configure(latency_ms=0)
    with stack(db_kind, mock.url, folder / f"overhead-{db_kind}") as s:
        s.start_workers(1)
        for i in range(5):  # warm-up: connections, prepared statements, imports
            _one(s, -i)
        mock.reset()
        starts, added, submit = [], [], []
        for i in range(count):
            starts.append(time.time())
            sub, seen, upstream_ms = _one(s, i)
            submit.append(sub * 1000)
            added.append(seen * 1000 - upstream_ms)
        arrivals = sorted(mock.stats(arrivals=True).get("arrivals", {}).get("mock-up", []))
    to_upstream = [(a - t) * 1000 for a, t in zip(arrivals, starts, strict=False)]
    return {
        "db": db_kind, "requests": count,
        "added_p50_ms": round(percentile(added, 0.5), 2),
        "added_p99_ms": round(percentile(added, 0.99), 2),
        "to_upstream_p50_ms": round(percentile(to_upstream, 0.5), 2),
        "to_upstream_p99_ms": round(percentile(to_upstream, 0.99), 2),
        "submit_p50_ms": round(percentile(submit, 0.5), 2),
    }
