"""Celery workers: the app, the task, and the engine that runs requests concurrently."""

from __future__ import annotations

from workers.app import create_app

__all__ = ["create_app", "worker_app"]


def worker_app(settings: object | None = None) -> object:
    """The fully wired Celery app (task registered, runtime installed)."""
    from routing.tokens import Tokenizer, set_tokenizer
    from schemas.settings import Settings
    from workers import broker, runtime, tasks

    conf = settings if isinstance(settings, Settings) else Settings()
    set_tokenizer(Tokenizer(conf.tiktoken_cache_dir))  # exact counts where files are on disk
    app = create_app(conf)
    # Consumers need the transport that survives Redis going away (workers/broker.py);
    # Flower keeps the stock one, whose URL scheme it reads.
    app.conf.broker_transport = broker.TRANSPORT
    tasks.register(app)
    runtime.install(app, conf)
    return app
