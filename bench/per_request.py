"""The concurrency model batchyard did not choose: one Celery task per request.

``bench.per_request`` is also a Celery app (``celery -A bench.per_request worker --pool threads
-c 64``): each task makes one synchronous httpx call to the mock, then counts itself in Redis.
It writes nothing to a database, so it is an upper bound for the model: the real thing would
also claim and record each row. Compared, at the same upstream latency, with batchyard's model
(chunk messages of ids, an asyncio engine per process) in the runner.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import redis
from celery import Celery

from bench.procs import ROOT, CpuMeter, MockProcess

__all__ = ["app", "per_request"]

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
DONE_KEY = "bench:per_request:done"
BODY = {"model": "mock-up", "max_tokens": 16,
        "messages": [{"role": "user", "content": "Classify item 1 as A or B."}]}

app = Celery("bench-per-request", broker=REDIS_URL)
app.conf.update(task_ignore_result=True, worker_prefetch_multiplier=1, task_acks_late=True,
                worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)
_local = threading.local()
_counter = redis.Redis.from_url(REDIS_URL)


@app.task(name="bench.call_one")
def call_one(url: str, seq: int) -> None:
    """One request: a pooled sync httpx client per thread, as a thread-pool worker would."""
    client = getattr(_local, "client", None)
    if client is None:
        client = _local.client = httpx.Client(timeout=60)
    client.post(f"{url}/v1/chat/completions", json=BODY,
                headers={"Authorization": "Bearer sk-bench"}).raise_for_status()
    _counter.incr(DONE_KEY)


def _enqueue(url: str, count: int) -> float:
    """Queue ``count`` tasks with ``apply_async`` in a loop; tasks per second."""
    started = time.monotonic()
    with app.producer_or_acquire() as producer:
        for seq in range(count):
            call_one.apply_async((url, seq), producer=producer)
    return count / (time.monotonic() - started)


def _drain(client: redis.Redis, worker: subprocess.Popen[bytes], count: int, timeout: float
           ) -> float:
    """Seconds from the first task done to the last (the worker's start-up is left out)."""
    deadline = time.monotonic() + timeout
    first = None
    while (done := int(client.get(DONE_KEY) or 0)) < count:
        if first is None and done:
            first = time.monotonic()
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the per-request worker stopped or timed out")
        time.sleep(0.02)
    return time.monotonic() - (first or deadline)


def per_request(mock: MockProcess, folder: Path, *, latency_ms: float, concurrency: int,
                count: int, timeout: float = 600) -> dict[str, Any]:
    """Queue ``count`` tasks, then drain them with a threads-pool worker of ``concurrency``."""
    mock.configure(latency_ms=latency_ms)
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    enqueue_rate = _enqueue(mock.url, count)
    folder.mkdir(parents=True, exist_ok=True)
    log = open(folder / f"per-request-{concurrency}.log", "ab")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.per_request", "worker", "--pool=threads",
         f"--concurrency={concurrency}", "--loglevel=WARNING", "--without-gossip",
         "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "BENCH_REDIS_URL": REDIS_URL},
    )
    try:
        meter = CpuMeter({"worker": worker.pid, "mock": mock.proc.pid})
        wall = _drain(client, worker, count, timeout)
        cores = meter.stop()
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()
        client.flushdb()
        client.close()
    return {"model": f"task per request, threads c={concurrency}", "requests": count,
            "seconds": round(wall, 2), "rps": round((count - 1) / wall, 1),
            "enqueue_per_s": round(enqueue_rate), "cores": cores,
            "ideal_rps": round(concurrency / (latency_ms / 1000)) if latency_ms else None,
            "latency_ms": latency_ms}
