"""The per-process engine: an asyncio loop that keeps hundreds of upstream calls in flight.

Celery feeder threads hand it chunks; it claims the chunk's rows (a lease in the database),
starts one coroutine per row on its loop, and returns as soon as the calls are running, so
a Celery slot is never held by a slow upstream. ``Capacity`` bounds the calls in flight (and
so memory); a slot is given back once the outcome is durable. If this process dies, the
leases run out and the reconciler hands the rows to another worker.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial

from sqlalchemy import Engine as DbEngine
from sqlalchemy.exc import SQLAlchemyError

from producers.endings import Endings
from providers.client import UpstreamClient
from routing.limits import Limiter
from routing.quotas import Quotas
from routing.router import Router
from schemas.catalog import Catalog
from schemas.jobs import ChunkMessage, JobEnding
from schemas.keys import Tier
from schemas.outcomes import Claimed, Outcome, OutcomeKind
from schemas.settings import Settings
from storage.direct import ThreadConnections
from storage.history import deployment_calls, usage_history
from storage.requests import claim
from storage.tenants import wake_scope
from workers.capacity import Capacity, default_reserve
from workers.loop_writer import LoopWriter
from workers.pipeline import Pipeline
from workers.writer import OutcomeWriter

__all__ = ["Engine", "ShuttingDown", "new_loop"]

log = logging.getLogger(__name__)

TAKE_WAIT_S = 1.0
CLAIM_RETRY_FIRST_S = 0.2
CLAIM_RETRY_MAX_S = 10.0
CLAIM_MIN_ROWS = 16
"""A full engine claims rows in groups as slots free up, not one transaction per row (a
group is at most 1/32 of the slots, so a small engine does not idle waiting for one)."""
PRIORITY_TIERS = frozenset({Tier.REALTIME, Tier.HIGH})
"""Tiers whose chunks may use the engine's reserved slots (see workers/capacity.py)."""
CLAIMS_APPLICATION_NAME = "batchyard-claims"
"""The feeders' own PostgreSQL connections (storage/direct.py), by name in pg_stat_activity."""
HANDOFF_WAIT_S = 0.05
"""How long a priority chunk's feeder waits for its rows' calls to be sent, or the lingering
feeder for their outcomes to be written (see _Handoff)."""


class _Handoff:
    """A priority chunk's rows until each has its upstream call sent (or, for the lingering
    feeder, its outcome written), or has ended without a call.

    The feeder thread that started them waits for that, at most ``HANDOFF_WAIT_S``, before it
    goes back to Celery. Otherwise the task's return, its acknowledgement, the consumer's next
    BRPOP and the task's log line run in that process's other threads while the loop admits
    and sends the rows, and the threads take turns on the GIL. Measured on the overhead
    benchmark (docs/PERFORMANCE.md, session 8): the worker stage's p50 1.43 / 1.61 -> 1.26 /
    1.15 ms on SQLite. Bulk chunks do not wait: their feeders are what keeps the engine full.

    One feeder at a time lingers: it waits for its rows' outcomes to be written (and their
    jobs' endings announced), not only sent, so when the upstream answers within
    ``HANDOFF_WAIT_S`` Celery's work for the chunk comes after the result is stored instead
    of during its write (session 15: ``added`` p50 on PostgreSQL 6.72 -> 6.31 ms, 12
    alternating blocks). Only one: while a slow call holds the lingering feeder for up to
    ``HANDOFF_WAIT_S``, the others take the next chunks as before.
    """

    def __init__(self, rows: int, *, linger: bool = False) -> None:
        self._left = rows
        self._lock = threading.Lock()
        self.linger = linger
        self.done = threading.Event()

    def tick(self) -> Callable[[], None]:
        """A callback for one row, to call from any thread once the row is as far as the
        feeder waits for; later calls of it count nothing."""
        fired = False

        def once() -> None:
            nonlocal fired
            with self._lock:
                if fired:
                    return
                fired = True
                self._left -= 1
                if self._left == 0:
                    self.done.set()
        return once


class ShuttingDown(Exception):
    """The engine is stopping; the rest of the chunk must go back to the queue."""


class Engine:
    """Claims rows, runs them concurrently, and writes their outcomes in batches."""

    def __init__(self, settings: Settings, db: DbEngine, catalog: Catalog, *,
                 endings: Endings | None = None) -> None:
        self._settings = settings.worker
        self._db = db
        self._token = secrets.token_hex(8)
        self._capacity = Capacity(settings.worker.max_in_flight,
                                  default_reserve(settings.worker.max_in_flight))
        self._tasks: set[asyncio.Task[None]] = set()
        self._turn = threading.Lock()  # non-priority chunks start one at a time
        self._lingering = threading.Lock()  # held by the one feeder that lingers (_Handoff)
        self._claim_min = max(1, min(CLAIM_MIN_ROWS, settings.worker.max_in_flight // 32))
        self._closing = threading.Event()
        self._running: dict[tuple[str, int], Claimed] = {}
        self._loop = new_loop(settings.worker.event_loop)
        self._thread = threading.Thread(target=self._loop.run_forever, name="batchyard-loop",
                                        daemon=True)
        self._thread.start()
        self._client = UpstreamClient(settings.upstream)
        limiter = Limiter(settings.redis_url, catalog.routing,
                          call_timeout_s=settings.upstream.timeout_s,
                          history=partial(deployment_calls, db))
        self._pipeline = Pipeline(Router(catalog, limiter), self._client, settings.worker,
                                  quotas=Quotas(settings.redis_url,
                                                history=partial(usage_history, db),
                                                waker=partial(wake_scope, db),
                                                recheck_s=settings.worker.budget_recheck_s))
        self._endings = endings
        self._writer = OutcomeWriter(db, batch=settings.worker.write_batch,
                                     on_written=self._capacity.give,
                                     on_finished=self._finished)
        direct = settings.worker.direct_connections and db.dialect.name == "postgresql"
        self._direct = (ThreadConnections(db, CLAIMS_APPLICATION_NAME,
                                          limit=settings.worker.feeders) if direct else None)
        self._loop_writer = (
            LoopWriter(db, on_written=self._capacity.give, on_finished=self._finished_on_loop,
                       fallback=self._writer.put) if direct else None)

    @property
    def in_flight(self) -> int:
        return self._capacity.used

    def accept(self, msg: ChunkMessage) -> int:
        """Start the chunk's runnable rows; return how many started. Blocks while full.

        Realtime and high chunks go straight for slots (and may use the reserved ones). The
        others take turns, one chunk at a time: when the engine is full, chunks sharing the
        freed slots would all end together, holding every feeder (and so the next message,
        however urgent) for as long as a whole round; one at a time, a feeder frees up every
        chunk's worth of slots, and the broker hands it the most urgent message waiting.
        """
        if msg.tier in PRIORITY_TIERS:
            return self._start_chunk(msg, priority=True)
        while not self._turn.acquire(timeout=TAKE_WAIT_S):
            if self._closing.is_set():
                raise ShuttingDown(f"{len(msg.seqs)} requests of {msg.job_id} not started")
        try:
            return self._start_chunk(msg, priority=False)
        finally:
            self._turn.release()

    def _start_chunk(self, msg: ChunkMessage, *, priority: bool) -> int:
        pending = list(msg.seqs)
        started = 0
        while pending:
            if self._closing.is_set():
                raise ShuttingDown(f"{len(pending)} requests of {msg.job_id} not started")
            n = self._capacity.take(len(pending), timeout=TAKE_WAIT_S,
                                    at_least=self._claim_min, priority=priority)
            if n == 0:
                continue
            part, pending = pending[:n], pending[n:]
            try:
                rows = self._claim(msg.job_id, part)
            except BaseException:
                self._capacity.give(n)
                raise
            self._capacity.give(n - len(rows))
            for row in rows:
                self._running[(row.job_id, row.seq)] = row
            if rows:  # one wake-up of the loop per claim, not one per row
                handoff = (_Handoff(len(rows), linger=self._lingering.acquire(blocking=False))
                           if priority else None)
                self._loop.call_soon_threadsafe(self._start, rows, handoff)
                if handoff is not None:
                    try:
                        handoff.done.wait(HANDOFF_WAIT_S)
                    finally:
                        if handoff.linger:
                            self._lingering.release()
            started += len(rows)
        return started

    def _start(self, rows: list[Claimed], handoff: _Handoff | None) -> None:
        """On the loop: one task per row, referenced until done (the loop keeps weak refs)."""
        for row in rows:
            task = self._loop.create_task(self._run(row, handoff))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _claim(self, job_id: str, seqs: list[int]) -> list[Claimed]:
        """Lease rows; while the database is unreachable, wait and try again (nothing is lost)."""
        delay = CLAIM_RETRY_FIRST_S
        retry = False
        while True:
            try:
                rows = claim(self._db, job_id, seqs, self._token, self._settings.lease_s,
                             time.time(), retry=retry, direct=self._direct)
                # a retry may take back rows of ours; never one this process is running
                return [r for r in rows if (r.job_id, r.seq) not in self._running]
            except SQLAlchemyError as exc:
                retry = True
                if self._closing.is_set():
                    raise ShuttingDown("database unreachable while stopping") from exc
                log.warning("claiming %d rows failed (%s); retrying in %.1fs", len(seqs),
                            type(exc).__name__, delay)
                self._closing.wait(delay)
                delay = min(delay * 2, CLAIM_RETRY_MAX_S)

    async def _run(self, row: Claimed, handoff: _Handoff | None) -> None:
        tick = None if handoff is None else handoff.tick()
        sent = None if handoff is None or handoff.linger else tick
        outcome = await self._pipeline.run(row, on_send=sent)
        if sent is not None:  # ended without a call (refused, deferred, invalid)
            sent()
        self._running.pop((row.job_id, row.seq), None)
        if tick is not None and self._loop_writer is not None and self._loop_writer.takes(outcome):
            await self._loop_writer.write(outcome)  # a priority row: see workers/loop_writer.py
            tick()
        else:
            self._writer.put(outcome, then=tick)

    def _finished(self, ended: Sequence[JobEnding]) -> None:
        """On the writer, once the jobs' ends are committed: announce them to their waiters,
        then log them."""
        if self._endings is not None:
            self._endings.announce(ended)
        _log_ended(ended)

    async def _finished_on_loop(self, ended: Sequence[JobEnding]) -> None:
        """``_finished`` for the loop writer's commits, without blocking the loop."""
        if self._endings is not None:
            await self._endings.announce_async(ended)
        _log_ended(ended)

    def refuse_new(self) -> None:
        """Start no more calls: chunks being accepted raise ShuttingDown (back to the queue).

        Called from Celery's SIGTERM handler, before the pool waits for its threads: without
        it, feeder threads blocked on a full engine would keep starting their chunks' calls
        for as long as the warm shutdown lasts.
        """
        self._closing.set()

    def stop(self, grace_s: float | None = None) -> None:
        """Stop taking work, let calls finish for ``grace_s``, hand back the rest, close."""
        self._closing.set()
        grace = self._settings.shutdown_grace_s if grace_s is None else grace_s
        if not self._capacity.wait_idle(grace):
            left = list(self._running.values())
            log.warning("handing back %d requests still running after %.0fs", len(left), grace)
            for row in left:
                self._writer.put(Outcome(kind=OutcomeKind.DEFERRED, job_id=row.job_id,
                                         seq=row.seq, claim=row.claim, not_before=time.time(),
                                         error_code="worker_shutdown",
                                         error_message="worker stopped during the call"))
        if self._loop_writer is not None:  # its last outcome may go to the writer: first
            # (a write it gives up is cancelled on the server, which psycopg waits 10 s for)
            try:
                asyncio.run_coroutine_threadsafe(self._loop_writer.close(), self._loop).result(
                    timeout=30)
            except TimeoutError:  # its outcome is with the writer already: stop that next
                log.warning("the loop writer did not close in 30s")
        self._writer.stop(timeout=max(grace, 5.0))
        if self._endings is not None:
            asyncio.run_coroutine_threadsafe(self._endings.close_async(), self._loop).result(
                timeout=5)
        if self._direct is not None:
            self._direct.close()
        asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result(timeout=5)
        asyncio.run_coroutine_threadsafe(self._pipeline.aclose(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def _log_ended(ended: Sequence[JobEnding]) -> None:
    for ending in ended:
        log.info("job %s %s", ending.id, ending.status.value)


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """An event loop of ``kind``; asyncio's own when uvloop is asked for but not installed."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed; the engine runs on asyncio's event loop")
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()
