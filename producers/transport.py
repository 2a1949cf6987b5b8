"""kombu's Redis transport with one redis-py client per channel, not one per command.

kombu 5.7's Redis channel builds a new ``redis.Redis`` (over the channel's pool) for each
message it puts and each acknowledgement, and ``redis.Redis.__init__`` is expensive: it builds
its response callbacks every time. Profiled publishing a one-chunk job (docs/PERFORMANCE.md,
session 10), that was about 0.17 ms of a 0.46 ms publish; a worker pays it again to note each
message as unacknowledged and to acknowledge it. Here a channel keeps the client it built for
as long as its connection pool lives (a new pool, after a reconnect or a fork, gets a new
client), so each command costs the round trip and the command alone.

The worker (workers/broker.py) uses this transport; the producer's publisher pushes Celery's
messages itself (producers/publisher.py), and Flower keeps kombu's own transport, whose URL
scheme it reads.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis

__all__ = ["TRANSPORT", "Channel", "Transport"]

TRANSPORT = "producers.transport:Transport"
"""The publisher app's ``broker_transport``."""


class Channel(kombu_redis.Channel):
    """A Redis channel that reuses its synchronous client while its pool is the same."""

    _kept: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        kept = self._kept
        if kept is None or kept.connection_pool is not self._pool:
            kept = self._kept = super()._create_client()
        return kept


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with ``Channel`` above."""

    Channel = Channel
