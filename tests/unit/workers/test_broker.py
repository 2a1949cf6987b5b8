"""The worker's broker transport notes unacknowledged messages without waiting for Redis
(workers/broker.py): what Redis holds afterwards is what kombu's own notes would leave."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection

from schemas.keys import KOMBU_UNACKED_KEY
from workers.broker import NOTES_CLIENT_NAME, QoS, Transport

QUEUE = "batchyard-test-chunks"


@pytest.fixture
def conn(redis_url: str) -> Iterator[Connection]:
    with Connection(redis_url, transport=Transport) as c:
        yield c


def _held(redis_url: str) -> dict[str, str]:
    """The unacknowledged messages Redis knows of: tag -> the message's body (base64)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        notes = client.hgetall(KOMBU_UNACKED_KEY)
        assert client.zcard(f"{KOMBU_UNACKED_KEY}_index") == len(notes)
        return {tag: json.loads(note)[0]["body"] for tag, note in notes.items()}
    finally:
        client.close()


def _drop_notes_connection(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    notes = [c["id"] for c in admin.client_list() if c["name"] == NOTES_CLIENT_NAME]
    assert len(notes) == 1
    admin.client_kill_filter(_id=notes[0])
    admin.close()


def _qos(conn: Connection) -> QoS:
    qos = conn.default_channel.qos
    assert isinstance(qos, QoS)
    return qos


def test_a_taken_message_is_noted_in_redis_until_it_is_acknowledged(
        conn: Connection, redis_url: str) -> None:
    queue = conn.SimpleQueue(QUEUE)
    queue.put("first")
    queue.put("second")

    first, second = queue.get(timeout=5), queue.get(timeout=5)
    _qos(conn).flush()
    held = _held(redis_url)
    first.ack()
    _qos(conn).flush()

    assert sorted(held) == sorted([first.delivery_tag, second.delivery_tag])
    assert list(_held(redis_url)) == [second.delivery_tag]


def test_notes_sent_on_a_connection_redis_dropped_are_written_again(
        conn: Connection, redis_url: str) -> None:
    queue = conn.SimpleQueue(QUEUE)
    for body in ("first", "second", "third"):
        queue.put(body)
    first = queue.get(timeout=5)
    _qos(conn).flush()

    _drop_notes_connection(redis_url)  # an idle timeout, a proxy's cut
    second = queue.get(timeout=5)  # its note is written to the dropped connection
    first.ack()
    third = queue.get(timeout=5)
    _qos(conn).flush()

    assert sorted(_held(redis_url)) == sorted([second.delivery_tag, third.delivery_tag])


def test_the_consumers_sweep_writes_again_a_note_sent_on_a_dropped_connection(
        conn: Connection, redis_url: str) -> None:
    queue = conn.SimpleQueue(QUEUE)
    queue.put("only")
    message = queue.get(timeout=5)
    _qos(conn).flush()
    _drop_notes_connection(redis_url)

    message.ack()  # written to the dropped connection; no delivery follows
    _qos(conn).restore_visible()  # kombu's consumer calls it every few seconds

    assert _held(redis_url) == {}


def test_closing_the_channel_puts_back_what_it_held(conn: Connection, redis_url: str) -> None:
    queue = conn.SimpleQueue(QUEUE)
    queue.put("held")
    queue.put("done")
    held, done = queue.get(timeout=5), queue.get(timeout=5)
    done.ack()

    conn.default_channel.close()  # no flush first: the close reads what is due
    client = redis.Redis.from_url(redis_url)

    assert _held(redis_url) == {}
    assert client.llen(QUEUE) == 1
    restored = json.loads(client.lindex(QUEUE, 0))  # type: ignore[arg-type]
    assert base64.b64decode(restored["body"]) == held.body == b"held"
    client.close()
