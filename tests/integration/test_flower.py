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
        job = stack.producer.submit([f"{secret_prompt} {i}" for i in range(10)],
                                    tier="high", model="small")
        stack.producer.wait(job.id, timeout=60)

        workers = wait_for(lambda: _get(f"{base}/api/workers?refresh=1"), 30,
                           "Flower to see the worker")
        queues = {q["name"] for w in workers.values() for q in w.get("active_queues", [])}
        assert {"batchyard.realtime", "batchyard.high", "batchyard.standard",
                "batchyard.bulk"} <= queues
        lengths = _get(f"{base}/api/queues/length")
        assert lengths is not None
        assert {q["name"] for q in lengths["active_queues"]} >= {"batchyard.bulk"}
        tasks = wait_for(lambda: _get(f"{base}/api/tasks"), 30, "Flower to list the tasks")
        assert tasks, "Flower shows no task"
        dump = str(tasks)
        assert job.id in dump
        assert secret_prompt not in dump and "sk-test" not in dump
    finally:
        flower.terminate()
        flower.wait(30)
