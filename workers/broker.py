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

import itertools
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

CHECK_AFTER_IDLE_S = 1.0
"""A notes connection idle this long is checked for a close by the server before a write."""
RETRY_AFTER_S = 1.0
"""After Redis failed a note twice, notes wait this long before the next attempt."""
SOCKET_TIMEOUT_S = 5.0
"""The notes connection's connect and read timeouts, where kombu's settings give none."""
MAX_DUE = 100_000
"""Notes kept for a Redis that does not answer, at most (the oldest are dropped first)."""


class _Notes:
    """Notes written to a Redis connection of their own, their replies read later.

    ``send`` writes a note and returns; the replies of the notes before it are read first (by
    then they have arrived), and ``confirm`` reads them all. A note stays in ``_due`` until
    its replies are read. If the connection fails (Redis closed it while idle, restarted,
    refused a command), every due note is written again, in order, on a new connection; if
    that fails too, they wait ``RETRY_AFTER_S`` for the next note or ``confirm`` (kombu's
    sweep calls it every few seconds). Each note sets or removes the same keys whatever came
    before it, and a note goes out only after the replies of the one before it, so writing
    them again in order ends in the state they would have left.
    """

    def __init__(self, connect: Callable[[], redis.Connection]) -> None:
        self._connect = connect
        self._conn: redis.Connection | None = None
        self._due: deque[Note] = deque()
        self._sent = 0  # the first _sent notes of _due were written on _conn
        self._sent_at = 0.0
        self._retry_at = 0.0
        self.closed = False

    def send(self, note: Note) -> None:
        if self.closed:  # as kombu's own acknowledgement after a close: not written
            log.debug("a note after its channel closed is not written: %s", note[0][0])
            return
        self._due.append(note)
        if len(self._due) > MAX_DUE:  # the rest are written again on a new connection
            self._drop_connection()
            log.warning("Redis has not taken notes of unacknowledged messages for a while; "
                        "the oldest is dropped: %s", self._due.popleft()[0][0])
        self._flow(wait=False)

    def confirm(self) -> None:
        """Write every due note and read its replies: after it, they are in Redis, or wait
        for Redis to answer again (logged)."""
        self._flow(wait=True)

    def close(self) -> None:
        self._retry_at = 0.0  # a last try, whatever the back-off
        self.confirm()
        if self._due:
            log.warning("the channel closed with %d notes of unacknowledged messages not "
                        "written; %s", len(self._due), _CONSEQUENCES)
            self._due.clear()
        self.closed = True
        self._drop_connection()

    def _flow(self, *, wait: bool) -> None:
        if not self._due or time.monotonic() < self._retry_at:
            return
        try:
            self._read(self._sent)  # the notes written before: their replies are in by now
            self._write()
            if wait:
                self._read(self._sent)
        except Exception:  # once more, on a new connection
            try:
                self._drop_connection()
                self._write()
                self._read(self._sent)
            except Exception as exc:  # bookkeeping never stops a delivery
                self._drop_connection()
                self._retry_at = time.monotonic() + RETRY_AFTER_S
                log.warning("noting messages in Redis failed (%s: %s); %d notes are written "
                            "once it answers (next note, or kombu's sweep within 10 s)",
                            type(exc).__name__, exc, len(self._due))

    def _write(self) -> None:
        """Write the due notes not written yet, on a connection that is still there."""
        if self._sent == len(self._due):
            return
        now = time.monotonic()
        # Every reply was read: anything to read on an idle connection is the server's close.
        if (self._conn is not None and now - self._sent_at >= CHECK_AFTER_IDLE_S
                and self._conn.can_read(0)):
            raise redis.ConnectionError("unexpected data on the notes connection")
        if self._conn is None:
            self._conn = self._connect()
            self._sent = 0
        notes = itertools.islice(self._due, self._sent, None)
        commands = [c for note in notes for c in (("MULTI",), *note, ("EXEC",))]
        self._conn.send_packed_command(self._conn.pack_commands(commands), check_health=False)
        self._sent = len(self._due)
        self._sent_at = now

    def _read(self, count: int) -> None:
        """Read the replies of the first ``count`` due notes, which were written."""
        for _ in range(count):
            if self._conn is None:
                raise redis.ConnectionError("the notes connection is closed")
            for _ in range(len(self._due[0]) + 1):  # MULTI's and each command's QUEUED
                self._conn.read_response()
            done = self._conn.read_response()  # EXEC's: a reply per command
            if isinstance(done, list) and any(isinstance(r, Exception) for r in done):
                log.warning("Redis refused a note of an unacknowledged message: %s", done)
            self._due.popleft()
            self._sent -= 1

    def _drop_connection(self) -> None:
        self._sent = 0
        if self._conn is not None:
            self._conn.disconnect()
            self._conn = None


_CONSEQUENCES = (
    "a taken message without its note is held in memory only (if this worker dies holding "
    "it, the reconciler publishes its rows again); an acknowledgement not written leaves "
    "its chunk noted until the visibility timeout redelivers it (claims run each row once)")


class QoS(kombu_redis.QoS):
    """kombu's acknowledgement emulation, without waiting for Redis on the delivery's path.

    kombu notes a delivered message as unacknowledged (ZADD and HSET in a MULTI/EXEC) and
    waits for Redis's reply before Celery sees the message: a round trip at the head of every
    chunk's path, 0.25-0.3 ms of a realtime request's queue stage on this machine
    (docs/PERFORMANCE.md, session 12). Here the note, and later the acknowledgement, are
    written to a connection of their own and their replies read when the next one is sent
    (``_Notes``), so a delivery costs a socket write. Notes go out in the order they
    happened; a flush (before a requeue, before the channel restores what it holds, and
    kombu's sweep every few seconds) reads every reply still due, so what is read back was
    written.

    What it changes: kombu's gap, a worker killed between popping a message and noting it,
    now runs until Redis has read the note rather than until its reply is back. A message
    lost there leaves its rows queued in the database, and the reconciler publishes them
    again once their tier's queue holds no message (workers/reconciler.py, the stranded
    rule). While Redis does not answer, notes wait in memory and are written once it does;
    a worker that dies meanwhile loses them, as kombu's notes are lost in a Redis restart,
    and its chunks come back the same way.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()  # the consumer notes deliveries, feeders their acks
        self._notes = _Notes(self._connect)
        prefix = self.channel.global_keyprefix  # kombu's client adds it; raw commands do not
        self._index_key = prefix + self.unacked_index_key
        self._hash_key = prefix + self.unacked_key

    def append(self, message: Any, delivery_tag: str) -> None:
        virtual.QoS.append(self, message, delivery_tag)  # held in memory, as kombu does
        delivery = message.delivery_info
        raw = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        with self._lock:
            self._notes.send((("ZADD", self._index_key, time.time(), delivery_tag),
                              ("HSET", self._hash_key, delivery_tag, raw)))

    def ack(self, delivery_tag: str) -> None:
        with self._lock:
            self._notes.send((("ZREM", self._index_key, delivery_tag),
                              ("HDEL", self._hash_key, delivery_tag)))
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        self.flush()  # a requeue reads the message back from its note
        super().reject(delivery_tag, requeue=requeue)

    def restore_unacked(self, client: Any = None) -> None:
        self.flush()  # the notes of what is held, before they are read back
        super().restore_unacked(client)

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        """kombu's sweep of notes older than the visibility timeout, every few seconds on the
        consumer: a note sent on a connection that died while this worker then sat idle, or
        kept while Redis did not answer, is written here, not left until the next delivery."""
        self.flush()
        super().restore_visible(*args, **kwargs)

    def flush(self) -> None:
        """Every note sent so far is in Redis once this returns (or waits for Redis, logged)."""
        with self._lock:
            self._notes.confirm()

    def close(self) -> None:
        """Flush, then close the notes' connection; later notes are not written."""
        with self._lock:
            self._notes.close()

    def _connect(self) -> redis.Connection:
        pool = self.channel.pool  # the synchronous pool: its settings, its connection class
        kwargs = {**pool.connection_kwargs, "client_name": NOTES_CLIENT_NAME}
        for timeout in ("socket_timeout", "socket_connect_timeout"):
            if kwargs.get(timeout) is None:
                kwargs[timeout] = SOCKET_TIMEOUT_S
        conn: redis.Connection = pool.connection_class(**kwargs)
        return conn


class Channel(transport.Channel):
    """A Redis channel (one client per pool, producers/transport.py) that reports a detached
    connection as a connection error, and notes unacknowledged messages with ``QoS``."""

    QoS = QoS

    def close(self) -> None:
        try:
            super().close()  # restores what it holds: its notes are flushed first
        finally:
            if isinstance(self._qos, QoS):
                self._qos.close()  # after the close's last delivery; later notes are dropped

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(transport.Transport):
    """kombu's Redis transport with ``Channel`` above."""

    Channel = Channel
