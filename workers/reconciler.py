"""The reconciler: the database is the truth, so repair what the broker lost or never got.

One worker at a time runs it (a Redis lock); every interval it:
1. notices that Redis lost its data (the epoch key is gone) and re-publishes every queued row;
2. publishes deferred rows whose wait is over (retries, hand-backs at shutdown);
3. re-publishes rows whose lease ran out (their worker died mid-call);
4. publishes jobs whose producer stored them but died or failed before publishing;
5. stops jobs whose completion window ran out (waiting requests end ``batch_expired``) and
   ends what raced a cancel or an expiry (storage/jobs.py explains), before rules 2 and 3
   look at deferrals and leases (which skip stopped jobs); the jobs it ends are announced to
   their waiters (producers/endings.py);
6. adds throttled ``job.progress`` webhook events when ``webhooks.progress_interval_s`` > 0;
7. re-publishes the queued rows of a tier for which the broker holds no message at all.
Publishing twice is harmless: a claim runs each row once.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta

import redis
from kombu.exceptions import KombuError
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from producers.endings import Endings
from producers.publisher import Publisher
from schemas.keys import EPOCH_KEY, KOMBU_UNACKED_KEY, RECONCILER_LOCK_KEY, Tier, queue_name
from schemas.settings import Settings
from storage import recovery
from storage.events import add_progress_events
from storage.jobs import expire_jobs, mark_dispatched, settle_stopping
from storage.requests import select_runnable_seqs

__all__ = ["Reconciler"]

log = logging.getLogger(__name__)

BATCH_LIMIT = 5_000


class Reconciler:
    """Runs ``tick`` every interval in a daemon thread while this worker holds the lock."""

    def __init__(self, settings: Settings, db: Engine, publisher: Publisher,
                 endings: Endings | None = None) -> None:
        self._settings = settings
        self._db = db
        self._publisher = publisher
        self._announce = endings.announce if endings is not None else None
        self._redis = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
        self._token = secrets.token_hex(8)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="batchyard-reconciler",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        interval = self._settings.worker.reconcile_interval_s
        while not self._stop.wait(interval):
            try:
                if self._lead(interval):
                    self.tick()
            except (redis.RedisError, SQLAlchemyError, OSError, KombuError) as exc:
                log.warning("reconciler pass failed (%s: %s); next in %.0fs",
                            type(exc).__name__, exc, interval)
            except Exception:  # a bug must not end recovery for the rest of the process
                log.exception("reconciler pass failed; next in %.0fs", interval)

    def _lead(self, interval: float) -> bool:
        ttl_ms = int(interval * 3000)
        if self._redis.set(RECONCILER_LOCK_KEY, self._token, nx=True, px=ttl_ms):
            return True
        if self._redis.get(RECONCILER_LOCK_KEY) == self._token.encode():
            self._redis.pexpire(RECONCILER_LOCK_KEY, ttl_ms)
            return True
        return False

    def tick(self) -> dict[str, int]:
        """One pass; the number of requests re-published by each rule."""
        now = time.time()
        counts = {"lost_broker": 0, "deferred": 0, "leases": 0, "undispatched": 0}
        counts.update(self._lifecycle(datetime.now(UTC)))
        if not self._redis.exists(EPOCH_KEY):
            for job_id, tier, seqs in recovery.iter_waiting(self._db):
                counts["lost_broker"] += self._publish(job_id, tier, seqs)
            # Marked only once all is published: a pass cut short is done again in full.
            self._redis.set(EPOCH_KEY, str(now))
        for rule, groups in (
            ("deferred", recovery.find_due_deferred(self._db, now, BATCH_LIMIT)),
            ("leases", recovery.find_expired_leases(self._db, now, BATCH_LIMIT)),
        ):
            for job_id, tier, seqs in groups:
                counts[rule] += self._publish(job_id, tier, seqs)
                recovery.mark_requeued(self._db, job_id, seqs, now)
        cutoff = datetime.now(UTC) - timedelta(seconds=self._settings.worker.dispatch_grace_s)
        for job_id, tier in recovery.find_undispatched_jobs(self._db, cutoff):
            with self._db.connect() as conn:
                seqs = select_runnable_seqs(conn, job_id)
            counts["undispatched"] += self._publish(job_id, tier, seqs)
            mark_dispatched(self._db, job_id)
        counts["stranded"] = self._stranded()
        if any(counts.values()):
            log.info("reconciler re-published %s", counts)
        return counts

    def _lifecycle(self, now: datetime) -> dict[str, int]:
        """Requests expired or ended after a stop, and progress events added."""
        counts = {"expired": expire_jobs(self._db, now, on_ended=self._announce),
                  "settled": settle_stopping(self._db, now, on_ended=self._announce)}
        interval = self._settings.webhooks.progress_interval_s
        if interval > 0:
            counts["progress_events"] = add_progress_events(self._db, interval, now)
        return counts

    def _stranded(self) -> int:
        """Publish again the queued rows of every tier for which the broker holds no message.

        A queued row of a dispatched job must have a message, in its queue or held
        unacknowledged by a worker. When a tier has neither, its queued rows lost theirs
        (a worker killed between popping a message and recording it as unacknowledged, a
        redelivered message acknowledged twice, a publish that landed in a Redis that then
        died): whatever the cause, they are published again once the tier runs dry.
        """
        try:
            held = {json.loads(v)[2] for v in self._redis.hvals(KOMBU_UNACKED_KEY)}
        except (ValueError, TypeError, IndexError):
            return 0  # an entry we cannot read: assume every tier may be held
        count = 0
        for tier in Tier:
            if queue_name(tier) in held or self._redis.llen(queue_name(tier)):
                continue
            for job_id, _, seqs in recovery.find_stranded(self._db, tier, BATCH_LIMIT):
                count += self._publish(job_id, tier, seqs)
        return count

    def _publish(self, job_id: str, tier: Tier, seqs: list[int]) -> int:
        if seqs:
            self._publisher.publish(job_id, tier, seqs, self._settings.producer.chunk_sizes[tier])
        return len(seqs)
