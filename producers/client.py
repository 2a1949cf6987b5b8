"""The Python producer: submit a job, follow it, read its results, cancel it."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from kombu.exceptions import KombuError
from pydantic import ValidationError
from redis.exceptions import RedisError
from sqlalchemy import Engine

from producers.auth import Caller, allowed_names, guarded_rows, queue_capped
from producers.endings import Endings
from producers.parse import InputReader, ModelAccess, Source
from producers.progress import Poller, follow
from producers.publisher import Publisher
from routing.catalog import load_catalog
from schemas.batch import BatchOutputLine
from schemas.catalog import Catalog
from schemas.destinations import DestinationRefused, check_destination
from schemas.errors import InputError, InputProblem
from schemas.jobs import JobOptions, JobView
from schemas.keys import Tier
from schemas.settings import Settings
from schemas.tenants import Access
from storage import (
    NewJob,
    cancel_job,
    create_job,
    database_errors,
    ensure_schema,
    get_job,
    iter_results,
    make_engine,
)
from storage.direct import ThreadConnections
from storage.outage import UNREACHABLE, unavailable
from storage.tenants import AccessCheck, StaleAccessError

__all__ = ["Producer", "new_job_id"]

log = logging.getLogger(__name__)

APPLICATION_NAME = "batchyard-producer"
"""A producer's own PostgreSQL connections (storage/direct.py), by name in pg_stat_activity."""


def new_job_id() -> str:
    """A time-ordered job id in the OpenAI style: ``batch_`` + 24 hex digits."""
    return f"batch_{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


class Producer:
    """Submits jobs and reads them back. Safe to share between threads.

    Every call that finds the database unreachable raises ``DatabaseUnavailableError``
    naming the database (without its password) and what the call left behind; ``wait``
    alone rides out an outage (see there).
    """

    def __init__(self, settings: Settings, *, engine: Engine | None = None,
                 catalog: Catalog | None = None) -> None:
        self.settings = settings
        self.engine = engine or make_engine(settings.database_url)
        with self._database("nothing was done"):
            ensure_schema(self.engine)
        self.caller = Caller(self.engine, settings.api_key, settings.require_api_key)
        self.catalog = catalog or load_catalog(settings.config)
        self.publisher = Publisher(settings.redis_url)
        self.endings = Endings(settings.redis_url)
        # PostgreSQL: a realtime-sized job's one INSERT, and the status reads of submit,
        # status and wait, on each calling thread's own connection (storage/direct.py)
        self._direct = (ThreadConnections(self.engine, APPLICATION_NAME)
                        if settings.producer.direct_connections
                        and self.engine.dialect.name == "postgresql" else None)

    @classmethod
    def from_env(cls) -> Producer:
        """A producer configured from REDIS_URL, DATABASE_URL, BATCHYARD_CONFIG and
        BATCHYARD_API_KEY (the tenant's key; none: the default tenant)."""
        return cls(Settings())

    def submit(self, source: Source, *, tier: Tier | str = Tier.STANDARD,
               model: str | None = None, metadata: dict[str, Any] | None = None,
               **options: Any) -> JobView:
        """Validate ``source`` whole, store the job, queue it; InputError if any line is bad.

        ``source`` is a JSONL path (OpenAI Batch format), or a list of batch lines, chat
        request bodies (dicts or ``ChatRequest``) or plain prompt strings (with ``model=``).
        ``options`` are ``JobOptions`` fields: ``webhook_url``, ``completion_window``
        (e.g. "24h"), ``routing`` (strategy, require_tags).
        """
        tier = Tier(tier)
        # On PostgreSQL the access last read is reused when the input can be read again: the
        # insert checks it still holds (producers/auth.py), else it is read and the input
        # validated again.
        reuse = isinstance(source, list | tuple) or (
            isinstance(source, str | Path) and Path(source).is_file())  # not a pipe
        with self._database("the job was not stored"):
            caller, still = self.caller.access(reuse=reuse)
        try:
            job_id, tenant, total = self._store(caller, still, source, tier, model, metadata,
                                                options)
        except (StaleAccessError, InputError) as exc:
            if still is None:
                raise
            # Validated against the access the last submit read: read it again. The insert
            # found it changed, or the input was refused and the change may allow it.
            with self._database("the job was not stored"):
                caller, now = self.caller.read()
            if isinstance(exc, InputError) and now == still:
                raise
            job_id, tenant, total = self._store(caller, None, source, tier, model, metadata,
                                                options)
        conf = self.settings.producer
        try:
            self.publisher.publish(job_id, tier, range(total), conf.chunk_sizes[tier])
            published = True
        except (KombuError, RedisError, OSError) as exc:
            # The job is stored (the database is the truth): the reconciler publishes jobs
            # left undispatched once the broker answers again. Nothing is lost; it waits.
            log.warning("job %s is stored but the broker did not take it (%s); it will be "
                        "queued by the reconciler once the broker answers", job_id, exc)
            published = False
        with self._database(f"job {job_id} is stored and will run; check it with `status`"):
            return get_job(self.engine, job_id, tenant=tenant, dispatched=published,
                           direct=self._direct)

    def _store(self, caller: Access, still: AccessCheck | None, source: Source, tier: Tier,  # noqa: PLR0913
               model: str | None, metadata: dict[str, Any] | None, options: dict[str, Any]
               ) -> tuple[str, str, int]:
        """Validate and insert the job under ``caller``'s access (checked to still hold with
        ``still``); its id, tenant and request count."""
        who, limits, own = caller.identity, caller.tenant_limits, caller.key_limits
        tenant = who.tenant_id
        try:
            opts = JobOptions(metadata=metadata or {}, **options)
        except ValidationError as exc:
            raise InputError([InputProblem(0, f"job options: {e['loc'][0]}: {e['msg']}")
                              for e in exc.errors()]) from None
        if opts.webhook_url is not None:  # the SSRF guard; the worker checks again
            try:
                check_destination(opts.webhook_url, self.settings.webhooks.allow)
            except DestinationRefused as exc:
                raise InputError([InputProblem(0, f"job options: webhook_url: {exc}")]) from None
        conf = self.settings.producer
        public = self.catalog.public_names()
        owner = f"tenant {tenant!r}" + (f" and API key {who.key_id!r}" if own.models else "")
        access = ModelAccess(allowed_names(public, limits, own), set(public), owner)
        reader = InputReader(access, default_model=model,
                             max_line_bytes=conf.max_line_bytes, max_problems=conf.max_problems)
        job_id = new_job_id()
        name = str(source) if isinstance(source, str) else type(source).__name__
        job = NewJob(id=job_id, tier=tier, options=opts, input_name=name, tenant_id=tenant,
                     api_key_id=who.key_id)
        with self._database(f"job {job_id} was not stored"):  # one transaction: all or nothing
            rows, check = guarded_rows(who, limits, own, reader, source)
            total = create_job(self.engine, job, rows, batch=conf.insert_batch, check=check,
                               check_reads=queue_capped(limits, own), still=still,
                               direct=self._direct)
        return job_id, tenant, total

    def status(self, job_id: str) -> JobView:
        """Counts per state, tokens and cost so far; NotFoundError for an unknown job (or
        another tenant's: the two are indistinguishable)."""
        with self._database("the job's status could not be read"):
            return get_job(self.engine, job_id, tenant=self.caller.tenant(), direct=self._direct)

    def wait(self, job_id: str, *, progress: bool = False, timeout: float | None = None,
             poll_s: float = 0.25, notify: Callable[[str], None] | None = None) -> JobView:
        """Block until the job ends (or ``timeout`` seconds pass) and return its status.

        The job is read every ``poll_s``. When a worker announces the job's ending
        (producers/endings.py), the wait returns at once, with the view last read updated by
        the ending (no read: the ending is what the commit wrote): a realtime job is seen done
        milliseconds after its result is stored, not on the next poll.

        A database outage does not end the wait: it is told once through ``notify`` (default:
        a warning in the log) and polling goes on with backoff. ``DatabaseUnavailableError``
        is raised only when no poll was answered for ``timeout`` or for
        ``settings.producer.wait_outage_s`` (300 s), whichever ends first.
        """
        with self.endings.watch(job_id) as watch:
            seen: list[JobView] = []

            def read() -> JobView:
                if watch.ending is not None and seen:
                    return watch.ending.view(seen[0])
                seen[:] = [self.status(job_id)]
                return seen[0]

            poller = Poller(read, timeout=timeout, poll_s=poll_s,
                            outage_s=self.settings.producer.wait_outage_s,
                            notify=notify or log.warning, pause=watch.pause)
            return follow(poller, progress=progress)

    def results(self, job_id: str, *, order: str = "input") -> Iterator[BatchOutputLine]:
        """The job's output lines, streamed from the database page by page (an outage in the
        middle raises DatabaseUnavailableError saying how many lines came before)."""
        with self._database("no result was read"):
            tenant = self.caller.tenant()
        return self._stream(iter_results(self.engine, job_id, order=order, tenant=tenant))

    def _stream(self, lines: Iterator[BatchOutputLine]) -> Iterator[BatchOutputLine]:
        count = 0
        try:
            for line in lines:
                yield line
                count += 1
        except UNREACHABLE as exc:
            raise unavailable(self.engine, exc, f"the results stopped after {count} lines; "
                              "read them again once it answers") from exc

    def cancel(self, job_id: str) -> JobView:
        """Stop the job: waiting requests are cancelled, running ones finish (the worker
        that records the last of them ends the job)."""
        with self._database("the job may not be cancelled: cancel it again once it answers"):
            tenant = self.caller.tenant()
            ending = cancel_job(self.engine, job_id, tenant=tenant)
            view = get_job(self.engine, job_id, tenant=tenant)
        if ending is not None:  # nothing was running: the cancel ended it; wake its waiters
            self.endings.announce([ending])
        return view

    def _database(self, consequence: str) -> AbstractContextManager[None]:
        """DatabaseUnavailableError, naming this producer's database, for an outage inside."""
        return database_errors(self.engine, consequence)

    def close(self) -> None:
        self.publisher.close()
        self.endings.close()
        if self._direct is not None:
            self._direct.close()
        self.engine.dispose()
