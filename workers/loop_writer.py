"""PostgreSQL: a realtime or high request's result written from the engine's loop.

The outcome writer (workers/writer.py) is a thread: an outcome reaches it through a queue,
the thread wakes, takes the GIL from the loop, writes, and announces the job's end. For a
realtime request that hand-off is a fixed cost on its path, and the writer's batching buys it
nothing, since nothing else is waiting. Here the engine's loop writes the outcome itself, on
an async connection of psycopg's of its own, with the writer's very statement
(``storage.batched.finish_and_count_async``: one statement, its own transaction, in
autocommit), then announces the ending on redis-py's asyncio client. Measured on the overhead
benchmark (docs/PERFORMANCE.md, session 13).

It takes an outcome only when that costs nothing else: one write at a time (the rest go to the
writer, which batches them), finishes only (a deferral commits with other rows; see
``storage.requests.record``), and not while it is backing off. Any failure hands the outcome
to the writer, which retries until the database takes it: a result is never dropped, and
never charged twice, since the statement does not rewrite a terminal row (a write that
committed but whose reply was lost is a no-op the second time; only its announcement is lost,
and the waiter's next poll finds the end). A write that takes longer than ``TIMEOUT_S`` (a
lock held by a long transaction, a server that stopped answering) is given up the same way,
and its connection closed.

The connection is opened on first use and after a failure, at most once every
``RETRY_AFTER_S``; it counts one towards PostgreSQL's ``max_connections`` per worker process
(``application_name`` ``batchyard-loop-writer``). ``BATCHYARD_WORKER__DIRECT_CONNECTIONS=false``
turns it off (and the feeders' own connections for claims, storage/direct.py): the writer
then writes every result, as on SQLite, where it is always off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import Engine as DbEngine

from schemas.jobs import JobEnding
from schemas.outcomes import Outcome, OutcomeKind
from storage.batched import finish_and_count_async

__all__ = ["LoopWriter"]

log = logging.getLogger(__name__)

TIMEOUT_S = 2.0
"""A write (with its connect) that takes longer is given up, and handed to the writer."""
RETRY_AFTER_S = 1.0
"""After a failure, outcomes go to the writer for this long before a new connection is tried."""
APPLICATION_NAME = "batchyard-loop-writer"
"""The connection's name in ``pg_stat_activity``, unless the database URL names one."""


class LoopWriter:
    """Writes one finished outcome at a time from the loop; ``fallback`` takes the rest."""

    def __init__(self, db: DbEngine, *, on_written: Callable[[int], None],
                 on_finished: Callable[[Sequence[JobEnding]], Awaitable[None]],
                 fallback: Callable[[Outcome], None]) -> None:
        if db.dialect.name != "postgresql":
            raise ValueError(f"the loop writer needs PostgreSQL, not {db.dialect.name}")
        args, kwargs = db.dialect.create_connect_args(db.url)
        self._connect_args: tuple[list[Any], dict[str, Any]] = (
            list(args), {"application_name": APPLICATION_NAME, **kwargs})
        self._on_written = on_written
        self._on_finished = on_finished
        self._fallback = fallback
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._busy = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._retry_at = 0.0
        self._closed = False
        self._stopping: asyncio.Future[None] | None = None

    def takes(self, outcome: Outcome) -> bool:
        """On the loop: whether ``write`` should take ``outcome`` now (else: the writer)."""
        return (not self._busy and not self._closed and outcome.kind is not OutcomeKind.DEFERRED
                and time.monotonic() >= self._retry_at)

    async def write(self, outcome: Outcome) -> None:
        """Write ``outcome`` (one ``takes`` said yes to), give its slot back, announce the end
        of its job if it ended it; on any failure, or no answer in ``TIMEOUT_S``, hand it to
        ``fallback`` at once (also when this coroutine is cancelled)."""
        self._busy = True
        self._idle.clear()
        task = asyncio.ensure_future(self._write(outcome))
        try:
            await asyncio.wait({task}, timeout=TIMEOUT_S)
        except BaseException:
            self._give_up(outcome, "cancelled")
            self._stop_in_background(task)
            raise
        if not task.done():
            self._give_up(outcome, f"no answer in {TIMEOUT_S:.0f}s")
            self._stop_in_background(task)
            return
        try:
            if (exc := task.exception()) is not None:
                self._give_up(outcome, f"{type(exc).__name__}: {exc}")
                await self._drop()
                return
            self._on_written(1)
            if ended := task.result():
                await self._on_finished(ended)
        finally:  # idle only now: ``close`` then waits for the announcement too
            self._busy = False
            self._idle.set()

    async def _write(self, outcome: Outcome) -> list[JobEnding]:
        conn = self._conn
        if conn is None or conn.closed:
            args, kwargs = self._connect_args
            conn = self._conn = await psycopg.AsyncConnection.connect(
                *args, autocommit=True, **kwargs)
        return await finish_and_count_async(conn, [outcome], datetime.now(UTC))

    def _give_up(self, outcome: Outcome, why: str) -> None:
        """Hand ``outcome`` to the writer now, and the next ones for ``RETRY_AFTER_S``. A
        write that committed anyway is a no-op for the writer."""
        self._retry_at = time.monotonic() + RETRY_AFTER_S
        log.warning("writing the outcome of %s/%d from the loop failed (%s); the writer takes "
                    "it, and the next ones for %.0fs", outcome.job_id, outcome.seq, why,
                    RETRY_AFTER_S)
        self._fallback(outcome)

    def _stop_in_background(self, task: asyncio.Future[list[JobEnding]]) -> None:
        """Cancel a write still running and drop its connection, staying busy until then:
        psycopg cancels the statement on the server, which may take seconds."""

        async def stop() -> None:
            try:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                await self._drop()
            finally:
                self._busy = False
                self._idle.set()

        self._stopping = asyncio.ensure_future(stop())  # referenced until done

    async def close(self) -> None:
        """On the loop: take no more outcomes, wait for the one being written and its
        announcement (a write is handed to ``fallback`` after ``TIMEOUT_S`` at most; stopping
        it on the server may take psycopg's cancel timeouts more), close."""
        self._closed = True
        await self._idle.wait()
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), TIMEOUT_S)
