"""The chaos run: one big job through faults, SIGKILLs and a Redis restart that loses every key.

    .venv/bin/python -m bench.chaos                  # 10,000 requests, 3 workers, 5 kills,
                                                     # 1 Redis restart; about 1.5 minutes
    .venv/bin/python -m bench.chaos --db postgres    # the same on PostgreSQL
    .venv/bin/python -m bench.chaos --requests 1000 --kills 2 --lease-s 4   # the test's size

The mock upstream answers 10% of calls with a 500, 5% with a 429 and lets 2% hang past the
client timeout. Three ``batchyard worker`` processes run the job; at random points of its
progress (seeded) a random worker is SIGKILLed and a replacement started, and the private
``redis-server`` (no persistence, on a free port: the shared Redis is never touched) is killed
and started again empty. The run then audits the job the way a user would and exits 0 only
when every input line came back exactly once, every success carries one cost, the job's totals
equal the sum of its requests, exactly one terminal event was recorded and POSTed (one
``job.completed`` webhook id), and no worker exited by itself. ``--deadline-s`` bounds the time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import redis
from sqlalchemy import Engine, func, select

from bench.dbs import database
from bench.procs import MockProcess, WorkerProcess
from producers import Producer
from schemas.jobs import JobStatus, RequestState
from schemas.settings import Settings
from schemas.webhooks import WebhookSettings, new_secret
from storage import get_job, iter_results
from storage import models as _models

__all__ = ["Audit", "Plan", "RedisServer", "audit_job", "main", "run"]

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


class RedisServer:
    """A private ``redis-server`` without persistence: a restart loses every key."""

    def __init__(self, folder: Path) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._folder = folder
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self._folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on {self.port}") from None
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        """Kill the server (SIGKILL, as a crash): every key is gone, connections drop."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)

    def restart(self, down_s: float) -> None:
        self.stop()
        time.sleep(down_s)  # an outage of this length, not synchronisation
        self.start()


class WebhookReceiver(ThreadingHTTPServer):
    """Answers every webhook POST with 204 and keeps its (webhook-id, event type)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str]] = []
        super().__init__(("127.0.0.1", 0), _WebhookHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def event_ids(self, kind: str) -> set[str]:
        return {event_id for event_id, t in list(self.received) if t == kind}


class _WebhookHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        assert isinstance(self.server, WebhookReceiver)
        self.server.received.append((self.headers.get("webhook-id", ""), body.get("type", "")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Audit:
    """What a user can check once a job ended; ``problems()`` names every broken promise."""

    status: str
    expected: int
    lines: int
    distinct: int
    missing: int
    succeeded: int
    failed: int
    cost_records: int
    job_counts: tuple[int, int]
    row_counts: tuple[int, int]
    job_totals: tuple[int, int, Decimal]
    row_totals: tuple[int, int, Decimal]
    terminal_events: int | None
    errors: dict[str, int] = field(default_factory=dict)
    missing_sample: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return self.lines - self.distinct

    def problems(self) -> list[str]:
        checks = [
            (self.status == JobStatus.COMPLETED, f"job status {self.status}"),
            (self.lines == self.expected, f"{self.lines} output lines for {self.expected}"),
            (self.duplicates == 0, f"{self.duplicates} duplicate custom_ids"),
            (self.missing == 0, f"{self.missing} custom_ids missing"),
            (self.cost_records == self.succeeded,
             f"{self.cost_records} cost records for {self.succeeded} successes"),
            (self.job_counts == self.row_counts,
             f"job counts {self.job_counts} != requests {self.row_counts}"),
            (self.job_totals == self.row_totals,
             f"job totals {self.job_totals} != sum of requests {self.row_totals}"),
            (self.terminal_events in (None, 1), f"{self.terminal_events} terminal job events"),
        ]
        return [message for ok, message in checks if not ok]

    def lines_of_report(self) -> list[str]:
        totals_ok = self.job_totals == self.row_totals and self.job_counts == self.row_counts
        return [
            f"job status           {self.status}",
            f"output lines         {self.lines} (expected {self.expected})",
            f"distinct custom_ids  {self.distinct}   duplicates {self.duplicates}   "
            f"missing {self.missing} {self.missing_sample or ''}",
            f"succeeded / failed   {self.succeeded} / {self.failed}   errors {self.errors}",
            f"cost records         {self.cost_records} (one per success: "
            f"{self.cost_records == self.succeeded})",
            f"job totals           tokens {self.job_totals[0]}+{self.job_totals[1]}, "
            f"${self.job_totals[2]}",
            f"sum of requests      tokens {self.row_totals[0]}+{self.row_totals[1]}, "
            f"${self.row_totals[2]}   equal: {totals_ok}",
            f"terminal job events  {self.terminal_events}",
        ]


def audit_job(engine: Engine, job_id: str, expected_ids: Sequence[str]) -> Audit:
    """Read the job back: its output lines, its request rows and its own counters."""
    seen: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    succeeded = 0
    for line in iter_results(engine, job_id):
        seen[line.custom_id] += 1
        if line.error is None:
            succeeded += 1
        else:
            errors[line.error.code] += 1
    missing = set(expected_ids) - set(seen)
    job = get_job(engine, job_id)
    t = _models.REQUESTS
    with engine.connect() as conn:
        mine = t.c.job_id == job_id
        cost_records = conn.execute(select(func.count()).where(
            mine, t.c.state == RequestState.SUCCEEDED, t.c.cost > 0)).scalar_one()
        by_state: dict[str, int] = dict(conn.execute(select(t.c.state, func.count()).where(mine)
                                     .group_by(t.c.state)).all())
        prompt, completion = conn.execute(select(
            func.coalesce(func.sum(t.c.prompt_tokens), 0),
            func.coalesce(func.sum(t.c.completion_tokens), 0)).where(mine)).one()
        costs = conn.execute(select(t.c.cost).where(mine, t.c.cost != 0)).scalars()
        row_cost = sum(costs, Decimal(0))
        events = _terminal_events(conn, job_id)
    return Audit(
        status=job.status.value, expected=len(expected_ids), lines=sum(seen.values()),
        distinct=len(seen), missing=len(missing), missing_sample=sorted(missing)[:5],
        succeeded=succeeded,
        failed=sum(errors.values()), cost_records=cost_records,
        job_counts=(job.counts.get(RequestState.SUCCEEDED, 0),
                    job.counts.get(RequestState.FAILED, 0)),
        row_counts=(by_state.get(RequestState.SUCCEEDED, 0),
                    by_state.get(RequestState.FAILED, 0)),
        job_totals=(job.prompt_tokens, job.completion_tokens, job.cost),
        row_totals=(int(prompt), int(completion), row_cost),
        terminal_events=events, errors=dict(errors),
    )


def _terminal_events(conn: Any, job_id: str) -> int | None:
    """Terminal events recorded for the job (None where the events table does not exist)."""
    events = getattr(_models, "EVENTS", None)
    if events is None:
        return None
    return int(conn.execute(select(func.count()).where(
        events.c.job_id == job_id, events.c.type != "job.progress")).scalar_one())


@dataclass(frozen=True)
class Plan:
    """What the run does; the defaults are the 10,000-request run of docs/RELIABILITY.md."""

    requests: int = 10_000
    workers: int = 3
    kills: int = 5
    redis_restarts: int = 1
    error_rate: float = 0.10
    throttle_rate: float = 0.05
    timeout_rate: float = 0.02
    latency_ms: float = 50.0
    upstream_timeout_s: float = 2.0
    lease_s: float = 10.0
    redis_down_s: float = 1.0
    deadline_s: float = 900.0
    db: str = "sqlite"
    seed: int = 7

    def worker_env(self) -> dict[str, str]:
        """Short leases and timeouts so that each fault costs seconds, not minutes."""
        return {
            "BATCHYARD_WORKER__LEASE_S": str(self.lease_s),
            "BATCHYARD_WORKER__VISIBILITY_TIMEOUT_S": str(self.lease_s),
            "BATCHYARD_WORKER__RECONCILE_INTERVAL_S": "1",
            "BATCHYARD_WORKER__DISPATCH_GRACE_S": "5",
            "BATCHYARD_WORKER__BACKOFF_BASE_S": "0.2",
            "BATCHYARD_WORKER__BACKOFF_MAX_S": "2",
            "BATCHYARD_WORKER__SHUTDOWN_GRACE_S": "5",
            "BATCHYARD_UPSTREAM__TIMEOUT_S": str(self.upstream_timeout_s),
        }


@dataclass
class Report:
    plan: Plan
    audit: Audit
    elapsed_s: float
    events: list[str]
    upstream: dict[str, Any]
    webhook_ids: int
    """Distinct ``webhook-id``s of the job.completed POSTs the receiver got (must be 1)."""
    crashed: int
    """Workers that exited on their own (not killed by the run): must be 0."""

    def problems(self) -> list[str]:
        return [*self.audit.problems(),
                *([] if self.webhook_ids == 1 else [f"{self.webhook_ids} job.completed ids"]),
                *([] if self.crashed == 0 else [f"{self.crashed} workers exited by themselves"])]

    @property
    def passed(self) -> bool:
        return not self.problems()

    def text(self) -> str:
        p = self.plan
        head = [f"chaos run: {p.requests} requests, {p.workers} workers, {p.kills} SIGKILLs, "
                f"{p.redis_restarts} Redis restart(s), {p.db}, lease {p.lease_s:g}s, seed "
                f"{p.seed}", *(f"  {e}" for e in self.events),
                f"elapsed              {self.elapsed_s:.1f}s",
                f"upstream calls       {self.upstream.get('total')} "
                f"{self.upstream.get('by_status')}"]
        verdict = "PASS" if self.passed else "FAIL: " + "; ".join(self.problems())
        return "\n".join([*head, *self.audit.lines_of_report(),
                          f"job.completed ids    {self.webhook_ids} (webhook POSTs received)",
                          f"workers crashed      {self.crashed} (besides the SIGKILLs)",
                          verdict])


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Plan()
    for name, value in vars(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--folder", type=Path, help="keep logs and the database here")
    parser.add_argument("--json", type=Path, help="also write the report here as JSON")
    args = vars(parser.parse_args(argv))
    folder, out = args.pop("folder"), args.pop("json")
    plan = Plan(**args)
    with TemporaryDirectory(prefix="batchyard-chaos-") as tmp:
        where = folder or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        report = run(plan, where)
    print(report.text())
    if out is not None:
        out.write_text(json.dumps({"plan": vars(plan), "audit": vars(report.audit),
                                   "elapsed_s": report.elapsed_s, "events": report.events,
                                   "upstream": report.upstream, "webhook_ids": report.webhook_ids,
                                   "crashed": report.crashed, "passed": report.passed},
                                  indent=2, default=str))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
