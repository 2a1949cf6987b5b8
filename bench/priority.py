"""Priority: how soon a realtime request is picked up while a large bulk backlog drains.

A bulk job of ``backlog`` requests is submitted first; while workers drain it (every in-flight
slot busy), one-request realtime jobs are submitted at a steady pace. Pickup is the time from
``submit`` called to the row claimed by a worker (``jobs.started_at``); done is to the result
stored. The backlog is cancelled at the end, so the run is bounded by the probes, not the drain.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.e2e import Load
from bench.measure import epoch, percentile
from bench.overhead import TimedPublish
from bench.procs import MockProcess
from bench.stack import MODEL, stack, write_input
from schemas.jobs import RequestState
from storage.models import JOBS

__all__ = ["priority"]

PROBE_INTERVAL_S = 0.5


def priority(mock: MockProcess, folder: Path, db_kind: str, load: Load, probes: int
             ) -> dict[str, Any]:
    """Realtime pickup p50/p95 under a ``load.count`` bulk backlog; the worker's peak RSS."""
    mock.configure(latency_ms=load.latency_ms)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"backlog-{load.count}.jsonl"
    if not path.exists():
        write_input(path, load.count, prefix="bulk")
    with stack(db_kind, mock.url, folder / f"priority-{db_kind}") as s:
        s.start_workers(1, "--max-in-flight", str(load.in_flight), processes=load.processes)
        started = time.time()
        backlog = s.producer.submit(str(path), tier="bulk")
        submit_s = time.time() - started
        sent: list[tuple[str, float]] = []
        published = TimedPublish(s.producer.publisher)
        queued: list[float] = []
        for i in range(probes):
            t0 = time.time()
            job = s.producer.submit([f"urgent {i}"], tier="realtime", model=MODEL)
            sent.append((job.id, t0))
            queued.append(published.at - t0)
            time.sleep(PROBE_INTERVAL_S)
        left = s.producer.status(backlog.id)
        pending = sum(left.counts.get(state, 0) for state in
                      (RequestState.QUEUED, RequestState.RUNNING, RequestState.DEFERRED))
        times = _wait_for_probes(s.producer.engine, sent)
        s.producer.cancel(backlog.id)
        rss = s.worker_peak_rss_mb()
    pickup = [claimed - t0 for t0, claimed, _ in times]
    done = [finished - t0 for t0, _, finished in times]
    return {
        "db": db_kind, "backlog": load.count, "backlog_submit_s": round(submit_s, 1),
        "backlog_left_at_end": pending, "probes": probes,
        "pickup_p50_ms": round(percentile(pickup, 0.5) * 1000, 1),
        "pickup_p95_ms": round(percentile(pickup, 0.95) * 1000, 1),
        "pickup_max_ms": round(max(pickup) * 1000, 1),
        "published_p95_ms": round(percentile(queued, 0.95) * 1000, 1),
        "done_p95_ms": round(percentile(done, 0.95) * 1000, 1),
        "worker_peak_rss_mb": round(rss, 1), "latency_ms": load.latency_ms,
        "in_flight": load.in_flight, "processes": load.processes,
    }


def _wait_for_probes(engine: Any, sent: list[tuple[str, float]], timeout: float = 60
                     ) -> list[tuple[float, float, float]]:
    """(submitted, claimed, completed) epoch seconds of every probe, once all completed."""
    ids = [job_id for job_id, _ in sent]
    query = select(JOBS.c.id, JOBS.c.started_at, JOBS.c.completed_at).where(JOBS.c.id.in_(ids))
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            rows = {r.id: r for r in conn.execute(query)}
        if all(rows[i].completed_at is not None for i in ids):
            break
        if time.monotonic() > deadline:
            raise TimeoutError("realtime probes not done under the backlog")
        time.sleep(0.2)
    return [(t0, epoch(rows[i].started_at), epoch(rows[i].completed_at)) for i, t0 in sent]
