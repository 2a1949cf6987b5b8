"""Publishing chunk messages (ids only) on the tier queues of the Celery broker.

The messages are Celery's own: task protocol 2 in JSON, as ``Celery.send_task`` writes them
for a task sent to a queue by name, which kombu's Redis transport pushes on the Redis list
named after the queue (the default exchange: the routing key is the queue). They are built
here and pushed with one LPUSH per queue and batch, on a redis-py client of the publisher's
own. Going through ``send_task`` cost about 0.5 ms of a one-chunk job's submit on a fast
machine and 1.2 ms on a slow one (Celery's options, signals and producer pool, kombu's
declarations and pipeline), against 0.13-0.3 ms for the LPUSH (docs/PERFORMANCE.md, session
15). ``tests/unit/test_publisher.py`` checks, field by field, that a message built here is the
one Celery builds, so a Celery that changes its format fails a test, not a worker.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from collections.abc import Sequence
from functools import cache
from typing import Any

import redis
from kombu import Exchange, Queue  # type: ignore[attr-defined]
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from schemas.jobs import ChunkMessage
from schemas.keys import CHUNK_TASK, TIER_ORDER, Tier, queue_name

__all__ = ["Publisher", "chunked", "task_message", "tier_queues"]

PUBLISH_BATCH = 1000
"""Messages sent to Redis in one LPUSH (one round trip) at most."""
TIMEOUT_S = 5.0
"""Connecting to Redis and each reply: a publish against a Redis that hangs fails, and the
job waits for the reconciler, as for a Redis that is down."""
RETRIES = 3
"""A connection refused or lost is tried again this often, 0.1, 0.2 and 0.4 s apart (kombu's
``max_retries`` of the Celery publisher this replaces: a Redis that is down fails a publish in
about 0.7 s, as it did). A retried LPUSH that had landed queues a chunk twice: harmless,
claims dedupe."""

_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def tier_queues() -> list[Queue]:
    """One durable direct queue per tier, in priority order; producers and workers share it."""
    return [Queue(queue_name(t), Exchange(queue_name(t), type="direct"), routing_key=queue_name(t))
            for t in TIER_ORDER]


def chunked(seqs: Sequence[int], size: int) -> list[tuple[int, ...]]:
    """``seqs`` cut into tuples of at most ``size``."""
    return [tuple(seqs[i : i + size]) for i in range(0, len(seqs), size)]


@cache
def _hostname() -> str:
    return socket.gethostname()


def task_message(payload: dict[str, Any], queue: str, argsrepr: str) -> str:
    """The JSON Celery puts on ``queue`` for ``send_task(CHUNK_TASK, args=[payload],
    queue=queue, argsrepr=argsrepr)``; a new task id and delivery tag each time."""
    task_id = str(uuid.uuid4())
    body = json.dumps([[payload], {}, _EMBED]).encode()
    return json.dumps({
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": CHUNK_TASK, "id": task_id, "shadow": None, "eta": None,
            "expires": None, "group": None, "group_index": None, "retries": 0,
            "timelimit": [None, None], "root_id": task_id, "parent_id": None,
            "argsrepr": argsrepr, "kwargsrepr": "{}",
            "origin": f"gen{os.getpid()}@{_hostname()}", "ignore_result": None,
            "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
        },
        "properties": {
            "correlation_id": task_id, "reply_to": None, "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
            "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
        },
    })


class Publisher:
    """Sends ``run_chunk`` task messages by name; it never imports the worker code. Safe to
    share between threads, and across a fork (redis-py's pool opens new connections in the
    child)."""

    def __init__(self, redis_url: str) -> None:
        self._redis = redis.Redis.from_url(
            redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S,
            retry=Retry(ExponentialBackoff(cap=0.4, base=0.05), RETRIES))

    def publish(self, job_id: str, tier: Tier, seqs: Sequence[int], chunk_size: int) -> int:
        """Publish the seqs of a job in chunks; return the number of messages.

        Up to ``PUBLISH_BATCH`` messages go in one LPUSH, in order (workers pop the other
        end, so the first chunk is taken first). Each carries a short ``argsrepr`` (what
        Flower shows) instead of the repr Celery would build of every seq. If Redis fails
        part way, some chunks are queued and the call raises: the job is stored and not
        marked dispatched, so the reconciler publishes it again (claims make the duplicates
        harmless).
        """
        chunks = chunked(seqs, chunk_size)
        queue = queue_name(tier)
        for start in range(0, len(chunks), PUBLISH_BATCH):
            self._redis.lpush(queue, *(
                task_message(ChunkMessage(job_id=job_id, seqs=chunk, tier=tier).model_dump(
                    mode="json"), queue, f"{job_id} seqs {chunk[0]}-{chunk[-1]} ({len(chunk)})")
                for chunk in chunks[start : start + PUBLISH_BATCH]))
        return len(chunks)

    def close(self) -> None:
        self._redis.close()
