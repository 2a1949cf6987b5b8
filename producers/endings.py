"""A job's ending, told over Redis pub/sub: workers announce it, ``wait`` wakes on it.

Without it a waiter learns of the end on its next poll: a realtime request answered in a few
milliseconds was seen up to ``poll_s`` (0.25 s by default) later. Now the worker that ends a
job publishes the job's ending (``schemas.jobs.JobEnding``: status, counters, tokens, cost and
times, as the commit wrote them) right after that commit, and a waiter watching that job
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

Every watch of a process shares one connection (``_Listener``): it is subscribed to the
pattern of every job's ending channel, and one thread reads it and hands each ending to the
watches of its job. A service waiting on ten thousand jobs at once holds one Redis connection
for them, not ten thousand, and a wait costs no round trip to Redis: no SUBSCRIBE before its
first read, no UNSUBSCRIBE after. The price is that the connection hears every job's ending
(a few hundred bytes each, dropped after a dictionary lookup when nobody here waits for it),
so it is closed after ``LISTEN_IDLE_S`` with no watch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import redis
import redis.asyncio
from pydantic import ValidationError
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from schemas.jobs import JobEnding
from schemas.keys import ENDED_CHANNEL_PATTERN, job_ended_channel, job_of_ended_channel

__all__ = ["EndingWatch", "Endings"]

log = logging.getLogger(__name__)

TIMEOUT_S = 2.0
"""How long one announcement, or the listener's subscription, may take before it is given up
(and the waiters poll instead)."""
QUIET_AFTER_FAILURE_S = 5.0
"""After an announcement failed, the next ones are skipped for this long: the worker's writer
announces, and an unreachable Redis must not hold it ``TIMEOUT_S`` on every batch. After the
listener failed to start, the watches of that long poll without trying again."""
LISTEN_IDLE_S = 30.0
"""A listener with no watch for this long closes its connection (the next watch opens one)."""
READ_TIMEOUT_S = 1.0
"""How long the listener's thread blocks reading before it checks whether it is idle."""


class Endings:
    """Announces job endings and watches for them, over one Redis connection pool.

    Watches share one subscribed connection (``_Listener``), opened by the first watch and
    kept while watches come; a listener whose connection fails wakes its watches, which poll
    for the rest of their waits, and the next watch opens a new one. A listener belongs to
    the process that opened it: after a fork the child opens its own.
    """

    def __init__(self, redis_url: str) -> None:
        self._url = redis_url
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=TIMEOUT_S,
                                           socket_connect_timeout=TIMEOUT_S)
        self._async: redis.asyncio.Redis | None = None
        self._quiet_until = 0.0
        self._listener: _Listener | None = None
        self._listen_quiet_until = 0.0
        self._owner = os.getpid()
        self._lock = threading.Lock()  # held while a listener starts (a round trip or two)
        self._closed = False
        _INSTANCES.add(self)

    def _forked(self) -> None:
        """In a forked child: the parent's listener is not ours (its thread is not here, its
        socket is the parent's), and a lock another thread held at the fork stays held."""
        self._lock = threading.Lock()
        self._listener, self._owner = None, os.getpid()
        self._listen_quiet_until = 0.0

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
        """A watch of ``job_id``'s ending; enter it before the job's first read."""
        return EndingWatch(self, job_id)

    def watching(self, job_id: str) -> bool:
        """Whether a watch of ``job_id`` in this process would hear its ending now."""
        listener = self._listener
        return listener is not None and listener.has(job_id)

    def listen(self, job_id: str, watch: EndingWatch) -> _Listener | None:
        """Hand ``job_id``'s endings to ``watch`` from now on; the listener that will (remove
        the watch from it when done), or None when Redis did not answer (poll instead)."""
        if self._owner != os.getpid():  # forked without the handler (see ``_forked``)
            self._forked()
        with self._lock:  # held while a listener starts: the others wait for it, not start one
            if self._closed or time.monotonic() < self._listen_quiet_until:
                return None
            if self._listener is not None and self._listener.add(job_id, watch):
                return self._listener
            try:  # none yet, or it ended: a new one, with this watch from the start
                self._listener = _Listener(self._url, job_id, watch)
            except (RedisError, OSError) as exc:
                self._listen_quiet_until = time.monotonic() + QUIET_AFTER_FAILURE_S
                log.info("not listening for job endings (%s); waits poll instead, for %.0fs "
                         "at least", exc, QUIET_AFTER_FAILURE_S)
                return None
            return self._listener

    def close(self) -> None:
        """Stop the listener (its watches poll for the rest of their waits) and close the
        pool."""
        with self._lock:
            self._closed = True
            listener, self._listener = self._listener, None
        if listener is not None and self._owner == os.getpid():
            listener.stop(None)
        self._redis.close()


_INSTANCES: weakref.WeakSet[Endings] = weakref.WeakSet()


def _forked() -> None:
    for endings in list(_INSTANCES):
        endings._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


class _Listener:
    """One connection subscribed to every job's ending channel, read by a thread of its own
    that hands each ending to the watches of its job in this process.

    Started subscribed, with its first watch: a watch added while it is ``alive`` hears
    every ending announced after that. When the connection fails (a Redis restart, say),
    every watch is woken to poll instead, and the listener is done (the next watch starts
    another, subscribed before it is used); so it is, closing its connection, once it had no
    watch for ``LISTEN_IDLE_S``.
    """

    def __init__(self, redis_url: str, job_id: str, watch: EndingWatch) -> None:
        # no retry, and no reconnect on a failure (``supported_errors``: redis-py's retry
        # reconnects and subscribes again before it raises, which would leave a connection
        # open after ``stop``; and an ending announced meanwhile would be missed by watches
        # that think they are heard)
        self._client = redis.Redis.from_url(
            redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S,
            retry=Retry(NoBackoff(), 0, supported_errors=()))
        self._sub = self._client.pubsub()
        try:
            self._sub.psubscribe(ENDED_CHANNEL_PATTERN)
            deadline = time.monotonic() + TIMEOUT_S
            while True:  # the confirmation: from here on every ending reaches this connection
                message = self._sub.get_message(timeout=max(0.0, deadline - time.monotonic()))
                if message is not None and message.get("type") == "psubscribe":
                    break
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no reply to PSUBSCRIBE in {TIMEOUT_S:g}s")
        except BaseException:
            self._close()
            raise
        self._watches: dict[str, list[EndingWatch]] = {job_id: [watch]}
        self._lock = threading.Lock()
        self._idle_since = time.monotonic()
        self.alive = True
        self._thread = threading.Thread(target=self._run, name="batchyard-endings",
                                        daemon=True)
        self._thread.start()

    def add(self, job_id: str, watch: EndingWatch) -> bool:
        """Hand ``job_id``'s endings to ``watch``; False if this listener is done."""
        with self._lock:
            if not self.alive:
                return False
            self._watches.setdefault(job_id, []).append(watch)
            return True

    def remove(self, job_id: str, watch: EndingWatch) -> None:
        with self._lock:
            watches = self._watches.get(job_id, [])
            if watch in watches:
                watches.remove(watch)
            if not watches:
                self._watches.pop(job_id, None)
            if not self._watches:
                self._idle_since = time.monotonic()

    def has(self, job_id: str) -> bool:
        with self._lock:
            return self.alive and job_id in self._watches

    def _run(self) -> None:
        try:
            while self.alive and not self._ended_idle():
                message = self._sub.get_message(timeout=READ_TIMEOUT_S)
                if message is not None and message.get("type") == "pmessage":
                    self._deliver(message.get("channel"), message.get("data"))
        except Exception as exc:  # anything: a thread that died with ``alive`` set would
            # keep every later watch deaf (also TypeError, AttributeError, ValueError:
            # redis-py reading a connection that ``stop`` closed under it)
            self.stop(f"{type(exc).__name__}: {exc}")

    def _ended_idle(self) -> bool:
        """No watch for ``LISTEN_IDLE_S``: done (in one step with the check, so a watch
        added meanwhile is refused and starts a new listener instead of being lost)."""
        with self._lock:
            if self._watches or time.monotonic() - self._idle_since < LISTEN_IDLE_S:
                return False
            self.alive = False
        self._close()
        return True

    def _deliver(self, channel: Any, data: Any) -> None:
        job_id = job_of_ended_channel(_text(channel))
        with self._lock:
            watches = list(self._watches.get(job_id, ())) if job_id is not None else []
        for watch in watches:
            watch.hear(data)

    def stop(self, why: str | None) -> None:
        """Done: wake every watch to poll (``why``: what failed; None: idle, or closed), close
        the connection (which ends a read the thread is blocked in)."""
        with self._lock:
            if not self.alive:
                return
            self.alive = False
            watches = [w for ws in self._watches.values() for w in ws]
            self._watches.clear()
        if why is not None:
            log.info("stopped listening for job endings (%s); %d waits poll instead", why,
                     len(watches))
        for watch in watches:
            watch.lose()
        self._close()

    def _close(self) -> None:
        """Close the subscription and the client's pool, each whatever the other raised
        (redis-py may raise anything on a socket closed under it)."""
        for close in (self._sub.close, self._client.close):
            with contextlib.suppress(Exception):
                close()


class EndingWatch:
    """One job's ending; ``pause`` sleeps until the ending is announced or time is up.

    Entered before the caller's first read of the job, so an ending between that read and
    the next pause is not missed. Once the listener fails it is a plain sleep for the rest of
    the wait. ``ending`` is the announced ending once heard (None for a payload that is not
    one: read the job instead).
    """

    def __init__(self, endings: Endings, job_id: str) -> None:
        self._endings = endings
        self._job_id = job_id
        self._listener: _Listener | None = None
        self._woken = threading.Event()
        self._told = False
        self.heard = False
        self.ending: JobEnding | None = None

    def __enter__(self) -> EndingWatch:
        self._listener = self._endings.listen(self._job_id, self)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.remove(self._job_id, self)

    def pause(self, seconds: float) -> None:
        """Return once the ending is announced (at once if it was already) or ``seconds``
        have passed, whichever is first; after one pause returned for the announcement, every
        pause is a plain sleep."""
        deadline = time.monotonic() + seconds
        if self._listener is not None and not self._told:
            self._woken.wait(seconds)
            if self.heard:
                self._told = True
                return
        time.sleep(max(0.0, deadline - time.monotonic()))

    def hear(self, data: Any) -> None:
        """The listener's thread: ``data`` was announced on this job's channel."""
        if self.heard:
            return  # announced twice (a reconciler and a worker, say): the first stands
        self.ending = self._ending(data)
        self.heard = True
        self._woken.set()

    def lose(self) -> None:
        """The listener's thread: it is done; poll for the rest of the wait."""
        self._listener = None
        self._woken.set()

    def _ending(self, data: Any) -> JobEnding | None:
        try:
            ending = JobEnding.model_validate_json(data)
        except (ValidationError, TypeError, ValueError):
            return None  # an earlier worker's announcement: the status alone
        return ending if ending.id == self._job_id else None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
