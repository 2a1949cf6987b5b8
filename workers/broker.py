"""kombu's Redis transport, made to survive losing Redis while chunks are unacknowledged.

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

from typing import Any

import redis

from producers import transport

__all__ = ["TRANSPORT", "Channel", "Transport"]

TRANSPORT = "workers.broker:Transport"
"""The worker app's ``broker_transport``."""


class Channel(transport.Channel):
    """A Redis channel (one client per pool, producers/transport.py) that reports a detached
    connection as a connection error."""

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(transport.Transport):
    """kombu's Redis transport with ``Channel`` above."""

    Channel = Channel
