"""The worker's broker transport notes unacknowledged messages without waiting for Redis
(workers/broker.py): what Redis holds afterwards is what kombu's own notes would leave."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection, Consumer, Queue
from kombu.message import Message

from schemas.keys import KOMBU_UNACKED_KEY
from tests.helpers import wait_for
from workers import broker
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


def _notes_connections(redis_url: str) -> int:
    admin = redis.Redis.from_url(redis_url)
    count = sum(c["name"] == NOTES_CLIENT_NAME for c in admin.client_list())
    admin.close()
    return count


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


def test_an_acknowledgement_after_the_channel_closed_leaves_the_redelivered_copy_noted(
        conn: Connection, redis_url: str) -> None:
    queue = conn.SimpleQueue(QUEUE)
    queue.put("late")
    late = queue.get(timeout=5)
    conn.default_channel.close()  # the message goes back to its queue
    with Connection(redis_url, transport=Transport) as again:
        copy = again.SimpleQueue(QUEUE).get(timeout=5)
        _qos(again).flush()

        late.ack()  # the first holder's feeder finishes after the close
        _qos(again).flush()

        assert copy.delivery_tag == late.delivery_tag
        assert list(_held(redis_url)) == [copy.delivery_tag]
        wait_for(lambda: _notes_connections(redis_url) == 1, 5,  # the closed channel's is gone
                 "one notes connection")


def test_a_connection_dropped_while_idle_is_noticed_before_the_next_note(
        conn: Connection, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker, "CHECK_AFTER_IDLE_S", 0.0)  # every write counts as after idle
    queue = conn.SimpleQueue(QUEUE)
    queue.put("first")
    queue.put("second")
    queue.get(timeout=5)
    _qos(conn).flush()
    _drop_notes_connection(redis_url)

    second = queue.get(timeout=5)  # no flush: the note must reach Redis on its own

    wait_for(lambda: second.delivery_tag in _held(redis_url), 5, "the second message's note")


class FlakyConnect:
    """Connects to Redis, but fails the first ``failures`` attempts with ``error``."""

    def __init__(self, redis_url: str, failures: int, error: Exception) -> None:
        self._pool = redis.Redis.from_url(redis_url).connection_pool
        self.failures = failures
        self._error = error

    def __call__(self) -> redis.Connection:
        if self.failures > 0:
            self.failures -= 1
            raise self._error
        return self._pool.connection_class(**self._pool.connection_kwargs)  # type: ignore[no-any-return]


def _note(tag: str) -> broker.Note:
    return (("ZADD", f"{KOMBU_UNACKED_KEY}_index", 1.0, tag),
            ("HSET", KOMBU_UNACKED_KEY, tag, json.dumps([{"body": tag}, "", QUEUE])))


@pytest.mark.parametrize("error", [redis.ConnectionError("refused"), TypeError("a bug")])
def test_notes_redis_did_not_take_wait_and_are_written_once_it_answers(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    monkeypatch.setattr(broker, "RETRY_AFTER_S", 0.0)
    connect = FlakyConnect(redis_url, failures=2, error=error)  # the note and its retry
    notes = broker._Notes(connect)

    notes.send(_note("first"))  # fails twice: kept
    kept = _held(redis_url)
    notes.send(_note("second"))  # Redis answers again: both written, in order
    notes.confirm()

    assert kept == {}
    assert sorted(_held(redis_url)) == ["first", "second"]
    notes.close()


def test_a_message_delivered_while_the_channel_closes_goes_back_and_leaves_no_connection(
        conn: Connection, redis_url: str) -> None:
    channel = conn.default_channel
    queue = Queue(QUEUE)
    conn.Producer().publish("first", routing_key=QUEUE, declare=[queue])
    taken: list[Message] = []
    Consumer(channel, [queue], callbacks=[lambda _body, m: taken.append(m)]).consume()
    conn.drain_events(timeout=5)
    with pytest.raises(TimeoutError):  # nothing more: the channel is left waiting in BRPOP
        conn.drain_events(timeout=0.2)
    conn.Producer().publish("second", routing_key=QUEUE)  # popped by that BRPOP

    channel.close()  # reads the BRPOP's reply first: "second" is taken during the close
    client = redis.Redis.from_url(redis_url)

    assert [m.body for m in taken] == [b"first", b"second"]
    assert _held(redis_url) == {} and client.llen(QUEUE) == 2  # both back on their queue
    wait_for(lambda: _notes_connections(redis_url) == 0, 5, "the notes connection closed")
    client.close()
