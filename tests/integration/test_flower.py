"""Flower against the test broker: it lists the worker and the tier queues, and task arguments
show ids only, never prompts or keys."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx

from tests.helpers import ROOT, wait_for
from tests.stack import Stack


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> dict | None:  # type: ignore[type-arg]
    try:
        resp = httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None
    return resp.json() if resp.status_code == 200 else None


def test_flower_shows_workers_queues_and_id_only_task_args(stack: Stack) -> None:
    port = _free_port()
    env = {**stack.env, "FLOWER_UNAUTHENTICATED_API": "true"}
    flower = subprocess.Popen([sys.executable, "-m", "batchyard", "flower", "--port", str(port)],
                              env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _get(f"{base}/api/queues/length") is not None, 60, "Flower's API")
        stack.start_worker(hostname="flowertest")
        secret_prompt = "TOP-SECRET-PROMPT-TEXT"
        jobs: list[str] = []

        def tasks_of_our_jobs() -> list | None:  # type: ignore[type-arg]
            # Task events are off until a monitor asks: Flower sends enable_events every 5 s,
            # so jobs that ran before its first request to this worker are not listed.
            job = stack.producer.submit([f"{secret_prompt} {i}" for i in range(10)],
                                        tier="high", model="small")
            stack.producer.wait(job.id, timeout=60)
            jobs.append(job.id)
            tasks = _get(f"{base}/api/tasks")
            return [t for t in (tasks or {}).values() if any(j in str(t) for j in jobs)]

        tasks = wait_for(tasks_of_our_jobs, 60, "Flower to list our tasks", interval=1.0)

        workers = wait_for(lambda: _get(f"{base}/api/workers?refresh=1"), 30,
                           "Flower to see the worker")
        queues = {q["name"] for w in workers.values() for q in w.get("active_queues", [])}
        assert {"batchyard.realtime", "batchyard.high", "batchyard.standard",
                "batchyard.bulk"} <= queues
        lengths = _get(f"{base}/api/queues/length")
        assert lengths is not None
        assert {q["name"] for q in lengths["active_queues"]} >= {"batchyard.bulk"}
        dump = str(tasks)
        assert secret_prompt not in dump and "sk-test" not in dump
    finally:
        flower.terminate()
        flower.wait(30)
