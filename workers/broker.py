"""kombu's Redis transport, made to survive losing Redis while chunks are unacknowledged, and
to note them as unacknowledged without waiting for Redis (``QoS``).

When the broker connection drops, Celery's consumer first "collects" the connection (which
detaches the transport from its URL) and then closes it. Closing a channel that still holds
unacknowledged messages restores them, and with its connection pool already gone the channel
rebuilds one from the detached URL: an ``AttributeError`` that Celery reports as
"Unrecoverable error" and that stops the worker (kombu 5.7; a known family of kombu bugs). Our
feeders nearly always hold unacknowledged chunks, so a Redis restart stopped about one worker
in three (tests/chaos/test_redis_restart.py).

Here that state raises the connection error kombu expects from a broker that is gone: the
close ignores it, the consumer reconnects as it does for any connection loss, and the chunks
that could not be restored come back by the visibility timeout or, after a restart that lost
them, by the reconciler.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

from producers import transport

__all__ = ["TRANSPORT", "Channel", "QoS", "Transport"]

log = logging.getLogger(__name__)

NOTES_CLIENT_NAME = "batchyard-unacked-notes"
"""The name of the connection ``QoS`` writes its notes on (Redis's CLIENT LIST shows it)."""

TRANSPORT = "workers.broker:Transport"
"""The worker app's ``broker_transport``."""

Note = tuple[tuple[Any, ...], ...]
"""The commands of one note, sent as one MULTI/EXEC."""


class _Notes:
    """Notes written to a Redis connection of their own, their replies read later.

    ``send`` writes a note and returns; its replies are read when the next note is sent (by
    then they have arrived) or by ``confirm``. A note whose replies were not read yet is kept:
    if the connection fails (Redis closed it while idle, or restarted), every kept note is
    written again, in order, on a new connection. Each note sets or removes the same keys
    whatever came before it, so writing one twice, in order, ends in the same state.
    """

    def __init__(self, connect: Callable[[], redis.Connection]) -> None:
        self._connect = connect
        self._conn: redis.Connection | None = None
        self._due: deque[Note] = deque()

    def send(self, note: Note) -> None:
        self.confirm()
        self._due.append(note)
        try:
            self._write([note])
        except (redis.RedisError, OSError):
            self._again()

    def confirm(self) -> None:
        """Read the replies of every note sent: after it, they are all in Redis (or logged
        as lost)."""
        try:
            self._read()
        except (redis.RedisError, OSError):
            self._again()

    def close(self) -> None:
        self.confirm()
        self._drop_connection()

    def _write(self, notes: list[Note]) -> None:
        if self._conn is None:
            self._conn = self._connect()
        commands = [c for note in notes for c in (("MULTI",), *note, ("EXEC",))]
        self._conn.send_packed_command(self._conn.pack_commands(commands), check_health=False)

    def _read(self) -> None:
        while self._due:
            assert self._conn is not None
            for _ in range(len(self._due[0]) + 1):  # MULTI's and each command's QUEUED
                self._conn.read_response()
            done = self._conn.read_response()  # EXEC's: a reply per command
            if isinstance(done, list) and any(isinstance(r, Exception) for r in done):
                log.warning("Redis refused a note of an unacknowledged message: %s", done)
            self._due.popleft()

    def _again(self) -> None:
        """On a new connection, every note whose replies were not read, in order."""
        self._drop_connection()
        try:
            self._write(list(self._due))
            self._read()
        except (redis.RedisError, OSError) as exc:
            log.warning("noting %d messages in Redis failed (%s: %s); a message whose note "
                        "was lost is held in memory only: if this worker dies holding it, "
                        "the reconciler publishes its rows again", len(self._due),
                        type(exc).__name__, exc)
            self._due.clear()
            self._drop_connection()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.disconnect()
            self._conn = None


class QoS(kombu_redis.QoS):
    """kombu's acknowledgement emulation, without waiting for Redis on the delivery's path.

    kombu notes a delivered message as unacknowledged (ZADD and HSET in a MULTI/EXEC) and
    waits for Redis's reply before Celery sees the message: a round trip at the head of every
    chunk's path, 0.25-0.3 ms of a realtime request's queue stage on this machine
    (docs/PERFORMANCE.md, session 12). Here the note, and later the acknowledgement, are
    written to a connection of their own and their replies read when the next one is sent
    (``_Notes``), so a delivery costs a socket write. Notes go out in the order they
    happened; a flush (before a requeue, before the channel restores what it holds, before
    it closes) reads every reply still due, so what is read back was written.

    What it changes: kombu's gap, a worker killed between popping a message and noting it,
    now runs until Redis has read the note rather than until its reply is back. A message
    lost there leaves its rows queued in the database, and the reconciler publishes them
    again once their tier's queue holds no message (workers/reconciler.py, the stranded
    rule). A note that cannot be written even on a new connection is logged and dropped: its
    message is held in memory only, as when kombu's note is lost in a Redis restart, and
    comes back the same way.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()  # the consumer notes deliveries, feeders their acks
        self._notes = _Notes(self._connect)

    def append(self, message: Any, delivery_tag: str) -> None:
        virtual.QoS.append(self, message, delivery_tag)  # held in memory, as kombu does
        delivery = message.delivery_info
        raw = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        with self._lock:
            self._notes.send((("ZADD", self.unacked_index_key, time.time(), delivery_tag),
                              ("HSET", self.unacked_key, delivery_tag, raw)))

    def ack(self, delivery_tag: str) -> None:
        with self._lock:
            self._notes.send((("ZREM", self.unacked_index_key, delivery_tag),
                              ("HDEL", self.unacked_key, delivery_tag)))
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        self.flush()  # a requeue reads the message back from its note
        super().reject(delivery_tag, requeue=requeue)

    def restore_unacked(self, client: Any = None) -> None:
        self.flush()  # the notes of what is held, before they are read back
        super().restore_unacked(client)

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        """kombu's sweep of notes older than the visibility timeout, every few seconds on the
        consumer: a note sent on a connection that died while this worker then sat idle is
        written again here, not left until the next delivery."""
        self.flush()
        super().restore_visible(*args, **kwargs)

    def flush(self) -> None:
        """Every note sent so far is in Redis once this returns (or was logged as lost)."""
        with self._lock:
            self._notes.confirm()

    def close(self) -> None:
        """Flush, then close the notes' connection (a later note opens another)."""
        with self._lock:
            self._notes.close()

    def _connect(self) -> redis.Connection:
        pool = self.channel.client.connection_pool
        kwargs = {**pool.connection_kwargs, "client_name": NOTES_CLIENT_NAME}
        conn: redis.Connection = pool.connection_class(**kwargs)
        return conn

class Channel(transport.Channel):
    """A Redis channel (one client per pool, producers/transport.py) that reports a detached
    connection as a connection error, and notes unacknowledged messages with ``QoS``."""

    QoS = QoS

    def close(self) -> None:
        if self._qos is not None and isinstance(self._qos, QoS):
            self._qos.close()  # its notes written while the connection is still there
        super().close()

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(transport.Transport):
    """kombu's Redis transport with ``Channel`` above."""

    Channel = Channel
