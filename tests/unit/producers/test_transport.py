"""The broker transport keeps one redis-py client per channel and pool (producers/transport.py)."""

from __future__ import annotations

from kombu import Connection

from producers.transport import Transport


def test_a_channel_reuses_its_client_until_its_pool_is_replaced(redis_url: str) -> None:
    with Connection(redis_url, transport=Transport) as conn:
        channel = conn.default_channel
        first = channel._create_client()
        assert channel._create_client() is first
        with channel.conn_or_acquire() as client:
            assert client is first
            client.lpush("batchyard-test-list", "x")

        channel._disconnect_pools()  # what a reconnect or a fork does
        fresh = channel._create_client()

        assert fresh is not first
        assert fresh.connection_pool is channel.pool
        assert fresh.lpop("batchyard-test-list") == b"x"
        assert channel._create_client(asynchronous=True) is not fresh
