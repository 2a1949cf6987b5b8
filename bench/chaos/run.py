"""Running the chaos job: the input, the worker cluster, the faults fired along the way."""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

from bench.chaos.audit import audit_job
from bench.chaos.plan import Plan, Report
from bench.chaos.services import RedisServer, WebhookReceiver
from bench.dbs import database
from bench.procs import MockProcess, WorkerProcess
from producers import Producer
from schemas.settings import Settings
from schemas.webhooks import WebhookSettings, new_secret

__all__ = ["run", "write_input"]

MODEL = "chaos-model"
CATALOG = """\
deployments:
  mock:
    provider: openai
    base_url: {url}/v1
    model: mock-up
    api_key_env: BATCHYARD_CHAOS_KEY
    pricing: {{input: "0.15", output: "0.60"}}
models:
  chaos-model:
    deployments: [mock]
routing:  # the one deployment fails 17% of calls: let its breaker cool down for 2 s, not 15
  breaker: {{consecutive_failures: 20, cooldown_s: 2}}
"""


def write_input(path: Path, count: int) -> list[str]:
    """An OpenAI Batch JSONL file of ``count`` chat requests; their custom_ids."""
    ids = [f"chaos-{i}" for i in range(count)]
    with open(path, "w") as fh:
        for i, cid in enumerate(ids):
            fh.write(json.dumps({"custom_id": cid, "method": "POST",
                                 "url": "/v1/chat/completions",
                                 "body": {"model": MODEL, "max_tokens": 16, "messages": [
                                     {"role": "user", "content": f"Classify item {i}."}]}}) + "\n")
    return ids


class _Cluster:
    """The worker processes of the run; ``kill_one`` SIGKILLs one and starts a replacement."""

    def __init__(self, env: dict[str, str], folder: Path, rng: random.Random) -> None:
        self._env, self._folder, self._rng = env, folder, rng
        self.workers: list[WorkerProcess] = []
        self._started = 0

    def start(self, count: int) -> None:
        new = []
        for _ in range(count):
            n = self._started
            self._started += 1
            new.append(WorkerProcess(self._env, self._folder / f"worker-{n}.log",
                                     "--hostname", f"chaos{n}@%h"))
        for worker in new:
            worker.wait_ready()
        self.workers.extend(new)

    def kill_one(self) -> str:
        victim = self._rng.choice(self.workers)
        victim.proc.kill()
        victim.proc.wait()
        self.workers.remove(victim)
        self.start(1)
        return f"SIGKILL worker pid {victim.proc.pid}, started a replacement"

    def crashed(self) -> int:
        """Workers of the run that are no longer running although nobody killed them."""
        return sum(1 for worker in self.workers if worker.proc.poll() is not None)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()


def _drive(producer: Producer, job_id: str, actions: list[Callable[[], str]], plan: Plan,
           rng: random.Random) -> list[str]:
    """Fire each action once the job's progress passes a random point; wait for the end."""
    started = time.monotonic()
    points = sorted(rng.uniform(0.05, 0.85) for _ in actions)
    rng.shuffle(actions)
    events = []
    while time.monotonic() - started < plan.deadline_s:
        view = producer.status(job_id)
        if view.done:
            break
        while points and view.finished >= points[0] * view.total:
            what = actions.pop(0)()
            events.append(f"{time.monotonic() - started:6.1f}s at {points.pop(0):4.0%}: {what}")
        time.sleep(0.2)  # polling the database, as `batchyard wait` does
    return events


def run(plan: Plan, folder: Path) -> Report:
    """The whole run in ``folder`` (worker logs stay there); always cleans up its processes."""
    rng = random.Random(plan.seed)
    server = RedisServer(folder)
    server.start()
    mock = MockProcess(latency_ms=plan.latency_ms)
    try:
        mock.configure(error_rate=plan.error_rate, throttle_rate=plan.throttle_rate,
                       timeout_rate=plan.timeout_rate, hang_seconds=30.0,
                       jitter_ms=plan.latency_ms / 2, seed=plan.seed)
        with database(plan.db, folder) as url:
            return _run_job(plan, folder, url, server, mock, rng)
    finally:
        mock.stop()
        server.stop()


def _run_job(plan: Plan, folder: Path, url: str, server: RedisServer,
             mock: MockProcess, rng: random.Random) -> Report:
    catalog = folder / "catalog.yaml"
    catalog.write_text(CATALOG.format(url=mock.url))
    env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": server.url,
           "BATCHYARD_CONFIG": str(catalog), "BATCHYARD_CHAOS_KEY": "sk-chaos",
           "BATCHYARD_WEBHOOKS__SECRET": new_secret(), "BATCHYARD_WEBHOOKS__ALLOW": "127.0.0.1",
           **plan.worker_env()}
    ids = write_input(folder / "input.jsonl", plan.requests)
    cluster = _Cluster(env, folder, rng)
    receiver = WebhookReceiver()
    producer = Producer(Settings(database_url=url, redis_url=server.url, config=catalog,
                                 webhooks=WebhookSettings(allow=["127.0.0.1"])))

    def restart_redis() -> str:
        server.restart(plan.redis_down_s)
        return f"Redis killed (every key lost), restarted empty after {plan.redis_down_s:g}s"

    try:
        cluster.start(plan.workers)
        started = time.monotonic()
        job = producer.submit(str(folder / "input.jsonl"), tier="bulk",
                              webhook_url=receiver.url)
        actions = [cluster.kill_one] * plan.kills + [restart_redis] * plan.redis_restarts
        events = _drive(producer, job.id, actions, plan, rng)
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + 30
        while not receiver.event_ids("job.completed") and time.monotonic() < deadline:
            time.sleep(0.2)  # the webhook is POSTed after the job ends
        return Report(plan, audit_job(producer.engine, job.id, ids), elapsed, events,
                      mock.stats(), len(receiver.event_ids("job.completed")), cluster.crashed())
    finally:
        cluster.stop()
        producer.close()
        receiver.shutdown()
