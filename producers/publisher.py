"""Publishing chunk messages (ids only) on the tier queues of the Celery broker."""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery
from kombu import Exchange, Queue  # type: ignore[attr-defined]

from producers.transport import TRANSPORT
from schemas.jobs import ChunkMessage
from schemas.keys import CHUNK_TASK, TIER_ORDER, Tier, queue_name

__all__ = ["Publisher", "chunked", "tier_queues"]

PUBLISH_BATCH = 1000
"""Messages sent to Redis in one pipeline at most (kombu's ``Producer.batch``)."""


def tier_queues() -> list[Queue]:
    """One durable direct queue per tier, in priority order; producers and workers share it."""
    return [Queue(queue_name(t), Exchange(queue_name(t), type="direct"), routing_key=queue_name(t))
            for t in TIER_ORDER]


def chunked(seqs: Sequence[int], size: int) -> list[tuple[int, ...]]:
    """``seqs`` cut into tuples of at most ``size``."""
    return [tuple(seqs[i : i + size]) for i in range(0, len(seqs), size)]


class Publisher:
    """Sends ``run_chunk`` task messages by name; it never imports the worker code."""

    def __init__(self, redis_url: str) -> None:
        self.app = Celery("batchyard-producer", broker=redis_url, set_as_current=False)
        self.app.conf.broker_connection_retry_on_startup = True
        self.app.conf.broker_transport = TRANSPORT  # one redis-py client per channel
        self.app.conf.broker_transport_options = {"max_retries": 3}
        self.app.conf.task_queues = tier_queues()

    def publish(self, job_id: str, tier: Tier, seqs: Sequence[int], chunk_size: int) -> int:
        """Publish the seqs of a job in chunks; return the number of messages.

        The messages go to Redis in pipelines of up to ``PUBLISH_BATCH`` (one round trip each,
        not one per message), and each carries a short ``argsrepr`` (what Flower shows)
        instead of the repr Celery would build of every seq. If Redis fails part way, some
        chunks are queued and the call raises: the job is stored and not marked dispatched,
        so the reconciler publishes it again (claims make the duplicates harmless).
        """
        chunks = chunked(seqs, chunk_size)
        queue = queue_name(tier)
        with self.app.producer_or_acquire() as producer, producer.batch(PUBLISH_BATCH):
            for chunk in chunks:
                message = ChunkMessage(job_id=job_id, seqs=chunk, tier=tier)
                self.app.send_task(
                    CHUNK_TASK,
                    args=[message.model_dump(mode="json")],
                    queue=queue,
                    producer=producer,
                    argsrepr=f"{job_id} seqs {chunk[0]}-{chunk[-1]} ({len(chunk)})",
                )
        return len(chunks)

    def close(self) -> None:
        self.app.close()
