"""The Celery app: tier queues served in priority order, one task that feeds the engine.

Priority: kombu's Redis transport round-robins queues by default; with
``queue_order_strategy="priority"`` its BRPOP lists the queues in the order the worker
consumes them (realtime, high, standard, bulk), and Redis pops from the first non-empty one.
With a prefetch of one message per feeder thread and chunks that only wait for a free
in-flight slot (never for a slow upstream), a realtime chunk is taken as soon as any slot frees.

Task events (what Flower's task view shows) cost three Redis publishes per chunk, one of them
on the consumer's path before the chunk reaches a feeder: about 1-2 ms of a realtime request's
latency (docs/PERFORMANCE.md). They are off until a monitor asks for them: Flower sends
``enable_events`` every 5 s by default, and ``celery control enable_events`` does it by hand.
``BATCHYARD_WORKER__TASK_EVENTS=true`` sends them from the start.

Redelivery: a chunk is acknowledged once its rows are claimed. Chunks a worker took but had not
finished claiming when it died stay unacknowledged in Redis; kombu puts them back on their
queue once they are older than ``worker.visibility_timeout_s`` (checked every
``RESTORE_INTERVAL_MAX_S`` at most). Redelivering a chunk a live worker still holds is harmless:
claims run each row once. Rows already claimed come back through their lease (the reconciler).
"""

from __future__ import annotations

import logging

from celery import Celery

from producers.publisher import tier_queues
from schemas.keys import TIER_ORDER, queue_name
from schemas.settings import Settings

__all__ = ["create_app"]

RESTORE_INTERVAL_MAX_S = 10.0


def create_app(settings: Settings) -> Celery:
    """The worker's Celery app for these settings."""
    app = Celery("batchyard", broker=settings.redis_url, set_as_current=True)
    app.conf.update(
        task_queues=tier_queues(),
        task_default_queue=queue_name(TIER_ORDER[2]),
        broker_transport_options={
            "queue_order_strategy": "priority",
            "visibility_timeout": settings.worker.visibility_timeout_s,
            # kombu sweeps every interval x throttle (default 10 x 10 s); one sweep per interval
            "unacked_restore_interval": min(RESTORE_INTERVAL_MAX_S,
                                            settings.worker.visibility_timeout_s / 2),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_send_task_events=settings.worker.task_events,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per call is too much
    return app
