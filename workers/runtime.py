"""The worker process's long-lived parts, built when Celery's worker starts, stopped with it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from celery import Celery
from celery.signals import worker_init, worker_shutdown, worker_shutting_down

from producers.endings import Endings
from producers.publisher import Publisher
from routing.catalog import load_catalog
from schemas.settings import Settings, read_secret
from storage.db import make_engine
from workers.engine import Engine
from workers.memory import tune_collector
from workers.reconciler import Reconciler
from workers.webhooks import WebhookSender

__all__ = ["Runtime", "engine", "install"]

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    engine: Engine
    reconciler: Reconciler
    publisher: Publisher
    webhooks: WebhookSender
    endings: Endings


_runtime: Runtime | None = None


def build(settings: Settings) -> Runtime:
    db = make_engine(settings.database_url)
    catalog = load_catalog(settings.config, read_secret)
    publisher = Publisher(settings.redis_url)
    endings = Endings(settings.redis_url)
    return Runtime(Engine(settings, db, catalog, endings=endings),
                   Reconciler(settings, db, publisher, endings), publisher,
                   WebhookSender(settings.webhooks, db), endings)


def engine() -> Engine:
    if _runtime is None:
        raise RuntimeError("the batchyard runtime is not started in this process")
    return _runtime.engine


def install(app: Celery, settings: Settings) -> None:
    """Start the runtime before the worker consumes; stop it gracefully when it shuts down."""

    def _start(**_: object) -> None:
        global _runtime
        if _runtime is None:
            _runtime = build(settings)
            _runtime.reconciler.start()
            _runtime.webhooks.start()
            tune_collector()
            log.info("batchyard engine ready: %d calls in flight at most",
                     settings.worker.max_in_flight)

    def _refuse_new(**_: object) -> None:
        if _runtime is not None:  # in the signal handler: only sets a flag
            _runtime.engine.refuse_new()

    def _stop(**_: object) -> None:
        global _runtime
        if _runtime is not None:
            _runtime.reconciler.stop()
            _runtime.engine.stop()
            _runtime.webhooks.stop()
            _runtime.publisher.close()
            _runtime.endings.close()
            _runtime = None

    worker_init.connect(_start, weak=False)
    worker_shutting_down.connect(_refuse_new, weak=False)
    worker_shutdown.connect(_stop, weak=False)
