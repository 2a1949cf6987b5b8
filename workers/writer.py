"""The outcome writer: one thread that stores outcomes in batched transactions.

Batching is the lever on database throughput (a transaction per batch, not per request). A
failed write is retried with backoff, never dropped: the outcomes stay in memory and their
upstream slots stay taken, so an unreachable database slows the worker down instead of losing
work. Slots are given back only once an outcome is durable.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from schemas.jobs import JobEnding
from schemas.outcomes import Outcome
from storage.requests import record

__all__ = ["OutcomeWriter"]

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.2
RETRY_MAX_S = 10.0

_STOP = object()
_Item = tuple[Outcome, Callable[[], None] | None]


class OutcomeWriter:
    """Collects outcomes from the event loop and writes them in batches; ``on_finished``
    gets the ending of every job a batch ended, once its commit is done."""

    def __init__(self, engine: Engine, *, batch: int, on_written: Callable[[int], None],
                 on_finished: Callable[[Sequence[JobEnding]], None]) -> None:
        self._engine = engine
        self._batch = batch
        self._on_written = on_written
        self._on_finished = on_finished
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batchyard-writer", daemon=True)
        self._thread.start()

    def put(self, outcome: Outcome, *, then: Callable[[], None] | None = None) -> None:
        """Write ``outcome`` in a coming batch; ``then`` is called (on the writer's thread)
        once it is written and the endings of its batch are announced."""
        self._queue.put((outcome, then))

    def stop(self, timeout: float) -> None:
        """Write what is queued, then stop."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            items: list[_Item] = [first]  # type: ignore[list-item]
            stop = False
            while len(items) < self._batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                items.append(item)  # type: ignore[arg-type]
            self._write([outcome for outcome, _ in items])
            for _, then in items:
                if then is not None:
                    then()
            if stop:
                return

    def _write(self, batch: list[Outcome]) -> None:
        delay = RETRY_FIRST_S
        while True:
            try:
                finished = record(self._engine, batch)
                break
            except SQLAlchemyError as exc:
                log.warning("writing %d outcomes failed (%s); retrying in %.1fs",
                            len(batch), type(exc).__name__, delay)
                self._stopped.wait(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        self._on_written(len(batch))
        if finished:
            self._on_finished(finished)
