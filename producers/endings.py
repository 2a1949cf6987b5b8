"""A job's ending, told over Redis pub/sub: workers announce it, ``wait`` wakes on it.

Without it a waiter learns of the end on its next poll: a realtime request answered in a few
milliseconds was seen up to ``poll_s`` (0.25 s by default) later. Now the worker that ends a
job publishes the job's ending (``schemas.jobs.JobEnding``: status, counters, tokens, cost and
times, as the commit wrote them) right after that commit, and a waiter subscribed to that job
returns at once: its view of the job with the ending applied, without reading the job again
(on PostgreSQL that read was a round trip and about half a millisecond of client CPU on the
path of every realtime request).

The database stays the truth (DESIGN.md, invariant 1): an ending is announced only once it is
committed, and it is the committed row's values; a lost announcement costs time, never a
result. With Redis down the waiter polls as before, and so it does for an ending nobody
announced. A payload that is not an ending (a worker of an earlier version announced the
status alone) wakes the waiter, which then reads the job. Announced: every job a worker's
write ends, a job a cancel ends at once, and the jobs the reconciler ends (a completion window
that ran out, the last of a stop). An ending carries no user content (invariant 2): the job's
metadata and webhook URL are not in it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import redis
import redis.asyncio
from pydantic import ValidationError
from redis.exceptions import RedisError

from schemas.jobs import JobEnding
from schemas.keys import job_ended_channel

__all__ = ["EndingWatch", "Endings"]

log = logging.getLogger(__name__)

TIMEOUT_S = 2.0
"""How long one announcement or subscription may take before it is given up (and the waiter
polls instead)."""
QUIET_AFTER_FAILURE_S = 5.0
"""After an announcement failed, the next ones are skipped for this long: the worker's writer
announces, and an unreachable Redis must not hold it ``TIMEOUT_S`` on every batch."""
IDLE_SUBSCRIBERS = 8
"""Connections kept subscribed to nothing between waits, for the next ones (more concurrent
waits than this open connections of their own, and close them after)."""
DRAIN_MAX = 64
"""Replies read off a kept connection before reuse, at most (two per earlier watch: its
subscribe's and its unsubscribe's); one with more left over is closed instead."""


class Endings:
    """Announces job endings and watches for them, over one Redis connection pool.

    A watch subscribes on a connection of its own (a subscribed connection takes no other
    command); once it ends, the connection is unsubscribed and kept for the next watch. A new
    connection for each wait cost a connect and redis-py's handshake (HELLO, two CLIENT
    SETINFO): half a millisecond of the producer's CPU and a fifth of Redis's per realtime
    request, on the cores the worker needs at that moment.

    A kept connection is checked before reuse (``_reusable``): the replies the last watch
    left unread are read off without waiting, and one the server closed meanwhile (a
    restart, an idle timeout) is dropped, so a SUBSCRIBE is never written into a dead socket.
    Kept connections belong to the process that kept them: after a fork the child opens its
    own.
    """

    def __init__(self, redis_url: str) -> None:
        self._url = redis_url
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=TIMEOUT_S,
                                           socket_connect_timeout=TIMEOUT_S)
        self._async: redis.asyncio.Redis | None = None
        self._quiet_until = 0.0
        self._idle: list[redis.client.PubSub] = []
        self._owner = os.getpid()
        self._lock = threading.Lock()
        self._closed = False

    def announce(self, ended: Iterable[JobEnding]) -> None:
        """Publish each committed ending in one round trip; a failure is logged, not raised
        (the waiters find the end on their next poll), and the announcements of the next
        ``QUIET_AFTER_FAILURE_S`` are skipped."""
        endings = self._due(ended)
        if not endings:
            return
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for ending in endings:
                    pipe.publish(job_ended_channel(ending.id), ending.model_dump_json())
                pipe.execute()
        except RedisError as exc:
            self._failed(len(endings), exc)

    async def announce_async(self, ended: Iterable[JobEnding]) -> None:
        """``announce`` from an event loop, without blocking it: on a client of redis-py's
        asyncio, made by the first call and bound to its loop (close it there with
        ``close_async``)."""
        endings = self._due(ended)
        if not endings:
            return
        if self._async is None:
            self._async = redis.asyncio.Redis.from_url(
                self._url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
        try:
            if len(endings) == 1:
                await self._async.publish(job_ended_channel(endings[0].id),
                                          endings[0].model_dump_json())
                return
            async with self._async.pipeline(transaction=False) as pipe:
                for ending in endings:
                    pipe.publish(job_ended_channel(ending.id), ending.model_dump_json())
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed(len(endings), exc)

    async def close_async(self) -> None:
        """Close ``announce_async``'s client, on the loop it is bound to."""
        client, self._async = self._async, None
        if client is not None:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    def _due(self, ended: Iterable[JobEnding]) -> list[JobEnding]:
        """The endings to announce: none while quiet after a failure."""
        return list(ended) if time.monotonic() >= self._quiet_until else []

    def _failed(self, count: int, exc: Exception) -> None:
        self._quiet_until = time.monotonic() + QUIET_AFTER_FAILURE_S
        log.info("%d job endings not announced (%s); waiters see them on their next poll, "
                 "and none is announced for %.0fs", count, exc, QUIET_AFTER_FAILURE_S)

    def watch(self, job_id: str) -> EndingWatch:
        """A subscription to ``job_id``'s ending; enter it before the job's first read."""
        return EndingWatch(self, job_id)

    def subscriber(self) -> redis.client.PubSub:
        """A connection for one watch: a kept one that is still good, else a new one."""
        while (sub := self._kept()) is not None:
            if _reusable(sub):
                return sub
            with contextlib.suppress(RedisError, OSError):
                sub.close()
        return self._redis.pubsub(ignore_subscribe_messages=True)

    def _kept(self) -> redis.client.PubSub | None:
        with self._lock:
            if self._owner != os.getpid():  # a forked child: the parent's, not to be touched
                self._idle, self._owner = [], os.getpid()
            return self._idle.pop() if self._idle else None

    def give_back(self, sub: redis.client.PubSub, channel: str) -> None:
        """Unsubscribe ``sub`` from ``channel`` and keep it for the next watch (closed if
        that fails or enough are kept already). A message of ``channel`` still on its way is
        ignored by the next watch, which reads only its own channel's."""
        try:
            sub.unsubscribe(channel)
        except (RedisError, OSError):
            pass
        else:
            with self._lock:
                if (not self._closed and self._owner == os.getpid()
                        and len(self._idle) < IDLE_SUBSCRIBERS):
                    self._idle.append(sub)
                    return
        with contextlib.suppress(RedisError, OSError):
            sub.close()

    def close(self) -> None:
        """Close the kept connections and the pool; a watch still running closes its own
        connection when it ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for sub in idle:
            with contextlib.suppress(RedisError, OSError):
                sub.close()
        self._redis.close()


class EndingWatch:
    """One job's ending channel; ``pause`` sleeps until the ending is announced or time is up.

    Subscribed on entry, before the caller's first read of the job, so an ending between that
    read and the next pause is not missed. Any Redis failure turns it into a plain sleep for
    the rest of the wait. ``ending`` is the announced ending once heard (None for a payload
    that is not one: read the job instead).
    """

    def __init__(self, endings: Endings, job_id: str) -> None:
        self._endings = endings
        self._job_id = job_id
        self._channel = job_ended_channel(job_id)
        self._sub: redis.client.PubSub | None = None
        self.heard = False
        self.ending: JobEnding | None = None

    def __enter__(self) -> EndingWatch:
        sub = self._endings.subscriber()
        try:
            sub.subscribe(self._channel)
        except RedisError as exc:
            log.info("not watching %s (%s); polling instead", self._channel, exc)
            sub.close()
        else:
            self._sub = sub
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            self._endings.give_back(sub, self._channel)

    def pause(self, seconds: float) -> None:
        """Return once the ending is announced or ``seconds`` have passed, whichever is first;
        after the announcement was heard, every pause is a plain sleep."""
        deadline = time.monotonic() + seconds
        while self._sub is not None and not self.heard:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                message = self._sub.get_message(timeout=left)
            except (RedisError, OSError, TypeError, ValueError) as exc:
                # TypeError, ValueError: the client was closed under the watch (``close`` in
                # another thread), and redis-py polls a socket it no longer has
                log.info("stopped watching %s (%s); polling instead", self._channel, exc)
                self._drop()
                break
            if (message is not None and message.get("type") == "message"
                    and _text(message.get("channel")) == self._channel):
                self.heard = True
                self.ending = self._ending(message.get("data"))
                return
        time.sleep(max(0.0, deadline - time.monotonic()))

    def _ending(self, data: Any) -> JobEnding | None:
        try:
            ending = JobEnding.model_validate_json(data)
        except (ValidationError, TypeError, ValueError):
            return None  # an earlier worker's announcement: the status alone
        return ending if ending.id == self._job_id else None

    def _drop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(RedisError, OSError):
                self._sub.close()
            self._sub = None


def _reusable(sub: redis.client.PubSub) -> bool:
    """Read off what earlier watches left on ``sub`` without waiting (their subscribe's and
    unsubscribe's replies, an ending that came after they stopped reading); False if the
    server closed the connection meanwhile, or it holds more than that."""
    conn = sub.connection
    if conn is None:
        return False
    try:
        for _ in range(DRAIN_MAX):
            if not conn.can_read(timeout=0):  # raises once the server closed it
                return True
            if not sub.subscribed:
                return False  # a reply with no subscription left to explain it
            sub.get_message(timeout=0)
    except (RedisError, OSError, TypeError, ValueError):
        return False
    return False


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
