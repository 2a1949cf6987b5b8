"""Throughput end to end: submit a job file, wait until every result and cost is in the database.

The clock starts before ``Producer.submit`` (parsing, inserting, publishing included) and stops at
the job's ``completed_at``, written by the worker in the transaction that stored the last result.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.dbs import server_cpu_seconds, size_bytes
from bench.procs import CpuMeter, MockProcess
from bench.stack import stack, write_input
from schemas.jobs import JobStatus, RequestState
from storage.models import REQUESTS

__all__ = ["Load", "run_job", "throughput"]


def run_job(s: Any, path: Path, tier: str, timeout: float) -> dict[str, Any]:
    """Submit ``path`` on ``tier``, wait for the end; wall time, rate, checks of the results."""
    started = time.time()
    job = s.producer.submit(str(path), tier=tier)
    submitted = time.time()
    final = s.producer.wait(job.id, timeout=timeout, poll_s=0.05)
    if final.status is not JobStatus.COMPLETED:
        raise RuntimeError(f"job {job.id} did not complete in {timeout}s: {final.counts}")
    assert final.completed_at is not None
    wall = final.completed_at.timestamp() - started
    with s.producer.engine.connect() as conn:
        stored, costs = conn.execute(
            select(func.count(), func.sum(REQUESTS.c.cost)).where(
                REQUESTS.c.job_id == job.id, REQUESTS.c.state == RequestState.SUCCEEDED,
                REQUESTS.c.response.is_not(None))
        ).one()
    cost_ok = Decimal(costs or 0) == final.cost and final.cost > 0
    if stored != final.total or not cost_ok:
        raise RuntimeError(f"job {job.id}: {stored}/{final.total} stored, cost ok={cost_ok}")
    return {"requests": final.total, "seconds": round(wall, 2),
            "submit_s": round(submitted - started, 2), "rps": round(final.total / wall, 1),
            "job_id": job.id}


@dataclass(frozen=True)
class Load:
    """What one end-to-end run pushes: requests, upstream latency, worker concurrency."""

    count: int
    latency_ms: float
    in_flight: int
    processes: int = 1


def throughput(mock: MockProcess, folder: Path, db_kind: str, load: Load,
               timeout: float = 600) -> dict[str, Any]:
    """One end-to-end run on a fresh database; also the DB size per stored result."""
    mock.configure(latency_ms=load.latency_ms)
    mock.reset()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"input-{load.count}.jsonl"
    if not path.exists():
        write_input(path, load.count)
    with stack(db_kind, mock.url, folder / f"e2e-{db_kind}-{load.latency_ms:g}") as s:
        s.start_workers(1, "--max-in-flight", str(load.in_flight), processes=load.processes)
        empty = size_bytes(s.settings.database_url)
        meter = CpuMeter({"worker": s.workers[0].proc.pid, "mock": mock.proc.pid,
                          "producer": os.getpid()})
        result = run_job(s, path, "bulk", timeout)
        result["cores"] = meter.stop()
        per_request = result["seconds"] * 1000 / result["requests"]
        result["cpu_ms_per_request"] = {
            "worker": round(result["cores"]["worker"] * per_request, 3),
            "producer": round(result["cores"]["producer"] * per_request, 3),
            "database": round(server_cpu_seconds(s.settings.database_url) * 1000
                              / result["requests"], 3),
            "mock": round(result["cores"]["mock"] * per_request, 3),
        }
        result["db_bytes_per_request"] = round(
            (size_bytes(s.settings.database_url) - empty) / load.count)
        result["worker_peak_rss_mb"] = round(s.worker_peak_rss_mb(), 1)
        stats = mock.stats()
        result["upstream_calls"] = stats["total"]
        result["max_in_flight_seen"] = stats["max_in_flight"]
    result.update(db=db_kind, latency_ms=load.latency_ms, in_flight=load.in_flight,
                  processes=load.processes)
    return result
