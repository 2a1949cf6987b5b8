"""The publisher's messages are the ones Celery sends, in the order a worker must take them."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import redis
from celery import Celery

from producers.publisher import PUBLISH_BATCH, Publisher
from schemas.jobs import ChunkMessage
from schemas.keys import CHUNK_TASK, Tier, queue_name

IDS = ("id", "root_id", "correlation_id", "delivery_tag")


def _queued(url: str, queue: str) -> list[dict[str, Any]]:
    """The queue's messages, first to be taken first (workers pop the right end)."""
    client = redis.Redis.from_url(url)
    try:
        return [json.loads(m) for m in reversed(client.lrange(queue, 0, -1))]
    finally:
        client.close()


def _without_ids(message: dict[str, Any]) -> dict[str, Any]:
    """``message`` with its body decoded and its fresh ids blanked."""
    out = {**message, "body": json.loads(base64.b64decode(message["body"])),
           "headers": dict(message["headers"]), "properties": dict(message["properties"])}
    for part in ("headers", "properties"):
        for key in IDS:
            if key in out[part]:
                out[part][key] = "<id>"
    return out


def test_a_message_is_the_one_celery_sends_for_the_same_task(redis_url: str) -> None:
    queue = queue_name(Tier.REALTIME)
    payload = ChunkMessage(job_id="batch_a", seqs=(0,), tier=Tier.REALTIME).model_dump(mode="json")
    app = Celery("reference", broker=redis_url, set_as_current=False)
    app.send_task(CHUNK_TASK, args=[payload], queue=queue, argsrepr="batch_a seqs 0-0 (1)")
    app.close()
    publisher = Publisher(redis_url)
    publisher.publish("batch_a", Tier.REALTIME, [0], 1)
    publisher.close()

    celery_sent, ours = _queued(redis_url, queue)

    # Celery copies send_task's own options into the properties, and names its thread as the
    # reply queue: nothing a worker reads for a task that stores no result
    assert celery_sent["properties"].pop("argsrepr") == "batch_a seqs 0-0 (1)"
    assert celery_sent["properties"].pop("reply_to") and ours["properties"].pop("reply_to") is None
    assert _without_ids(ours) == _without_ids(celery_sent)
    headers, properties = ours["headers"], ours["properties"]
    assert headers["id"] == headers["root_id"] == properties["correlation_id"]
    assert headers["origin"].startswith(f"gen{os.getpid()}@")
    assert properties["delivery_tag"] != celery_sent["properties"]["delivery_tag"]


def test_chunks_are_queued_in_order_across_batches(redis_url: str) -> None:
    count = PUBLISH_BATCH * 2 + 5
    publisher = Publisher(redis_url)
    sent = publisher.publish("batch_b", Tier.BULK, range(count * 2), 2)
    publisher.close()

    queued = _queued(redis_url, queue_name(Tier.BULK))

    assert sent == count == len(queued)
    seqs = [json.loads(base64.b64decode(m["body"]))[0][0]["seqs"] for m in queued]
    assert seqs == [[2 * i, 2 * i + 1] for i in range(count)]
    assert len({m["headers"]["id"] for m in queued}) == count
