"""The Celery task: a thin adapter from a queue message to the engine."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.exceptions import Reject

from schemas.jobs import ChunkMessage
from schemas.keys import CHUNK_TASK
from workers import runtime
from workers.engine import ShuttingDown

__all__ = ["register"]


def register(app: Celery) -> None:
    """Add ``run_chunk`` to ``app``."""

    @app.task(name=CHUNK_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def run_chunk(payload: dict[str, Any]) -> int:
        msg = ChunkMessage.model_validate(payload)
        try:
            return runtime.engine().accept(msg)
        except ShuttingDown as exc:
            raise Reject(str(exc), requeue=True) from exc
