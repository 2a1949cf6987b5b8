"""One benchmark stack: a database, a Redis database, a catalog on the mock, real workers.

The Redis database (``BENCH_REDIS_URL``, default db 15) belongs to the benchmark: it is
flushed when a stack starts and when it stops. Never point it at a database others use.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.dbs import database
from bench.procs import WorkerProcess
from producers import Producer
from schemas.keys import EPOCH_KEY
from schemas.settings import Settings

__all__ = ["MODEL", "REDIS_URL", "Stack", "stack", "write_input"]

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
MODEL = "bench-model"
_KEY_ENV = "BATCHYARD_BENCH_KEY"

CATALOG = """\
deployments:
  mock:
    provider: openai
    base_url: {url}/v1
    model: mock-up
    api_key_env: BATCHYARD_BENCH_KEY
    pricing: {{input: "0.15", output: "0.60"}}
models:
  bench-model:
    deployments: [mock]
"""


@dataclass
class Stack:
    """What a scenario drives: the producer, the env workers get, the workers it started."""

    folder: Path
    db_kind: str
    settings: Settings
    env: dict[str, str]
    workers: list[WorkerProcess] = field(default_factory=list)
    _producer: Producer | None = None

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(self.settings)
        return self._producer

    def start_workers(self, count: int, *args: str, processes: int = 1, **env: str
                      ) -> list[WorkerProcess]:
        """Start ``count`` worker commands of ``processes`` each; wait until all consume."""
        started = []
        extra = ["--processes", str(processes)] if processes > 1 else []
        for _ in range(count):
            n = len(self.workers)
            worker = WorkerProcess({**self.env, **env}, self.folder / f"worker-{n}.log",
                                   "--hostname", f"bench{n}@%h", *extra, *args)
            self.workers.append(worker)
            started.append(worker)
        for worker in started:
            worker.wait_ready(processes)
        return started

    def worker_peak_rss_mb(self) -> float:
        return max((mb for w in self.workers for mb in w.peak_rss_mb()), default=0.0)

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()

    def close(self) -> None:
        self.stop_workers()
        if self._producer is not None:
            self._producer.close()
            self._producer = None


def _flush(*, epoch: bool = False) -> None:
    """Empty the benchmark's Redis database; ``epoch``: then mark it as not lost.

    On a Redis without the epoch key the reconciler takes the broker for one that lost its
    data and re-publishes every queued row (harmless: claims dedupe, but it is extra work). A
    benchmark measures the steady state, so it sets the key as a running system would have.
    """
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    if epoch:
        client.set(EPOCH_KEY, str(time.time()))
    client.close()


@contextmanager
def stack(db_kind: str, mock_url: str, folder: Path) -> Iterator[Stack]:
    """A fresh database of ``db_kind``, a flushed Redis database and a catalog on the mock."""
    folder.mkdir(parents=True, exist_ok=True)
    for old_log in folder.glob("worker-*.log"):
        old_log.unlink()
    catalog = folder / "catalog.yaml"
    catalog.write_text(CATALOG.format(url=mock_url))
    _flush(epoch=True)
    with database(db_kind, folder) as url:
        env = dict(os.environ)
        env.update({"DATABASE_URL": url, "REDIS_URL": REDIS_URL,
                    "BATCHYARD_CONFIG": str(catalog), _KEY_ENV: "sk-bench"})
        settings = Settings(database_url=url, redis_url=REDIS_URL, config=catalog)
        s = Stack(folder=folder, db_kind=db_kind, settings=settings, env=env)
        try:
            yield s
        finally:
            s.close()
            _flush()


def write_input(path: Path, count: int, *, prefix: str = "q") -> Path:
    """An OpenAI Batch JSONL file of ``count`` small chat requests (~190 bytes a line)."""
    with open(path, "w") as fh:
        for i in range(count):
            line = {"custom_id": f"{prefix}-{i}", "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": MODEL, "max_tokens": 16,
                             "messages": [{"role": "user",
                                           "content": f"Classify item {i} as A or B."}]}}
            fh.write(json.dumps(line, separators=(",", ":")) + "\n")
    return path
