"""The test stack: mock upstream, catalog, settings, producer and real worker processes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from schemas.settings import Settings
from tests.helpers import WorkerProcess

CATALOG = """\
deployments:
  mock-a:
    provider: openai
    base_url: {url}/v1
    model: up-a
    api_key_env: BATCHYARD_TEST_KEY
    weight: 1
    pricing: {{input: "0.15", output: "0.60", cached_input: "0.075"}}
  mock-b:
    provider: openai
    base_url: {url}/v1
    model: up-b
    api_key_env: BATCHYARD_TEST_KEY
    weight: 1
    pricing: {{input: "1.10", output: "4.40", batch_discount: "0.5"}}
models:
  small:
    aliases: [small-alias]
    deployments: [mock-a]
  large:
    deployments: [mock-b]
"""


@dataclass
class Stack:
    tmp: Path
    settings: Settings
    env: dict[str, str]
    mock_url: str
    workers: list[WorkerProcess] = field(default_factory=list)
    _producer: object | None = None

    @property
    def producer(self):  # type: ignore[no-untyped-def]
        from producers import Producer

        if self._producer is None:
            self._producer = Producer(self.settings)
        return self._producer

    def tenant_producer(self, tenant_id: str, limits: object = None):  # type: ignore[no-untyped-def]
        """A producer acting with a new key of a new tenant ``tenant_id`` with ``limits``."""
        from pydantic import SecretStr

        from producers import Producer
        from storage import make_engine
        from storage.tenants import create_key, create_tenant

        engine = make_engine(self.settings.database_url)
        create_tenant(engine, tenant_id, limits=limits)  # type: ignore[arg-type]
        key = create_key(engine, tenant_id).key
        engine.dispose()
        return Producer(self.settings.model_copy(update={"api_key": SecretStr(key)}))

    def start_worker(self, *args: str, ready: bool = True, hostname: str | None = None,
                     **env: str) -> WorkerProcess:
        n = len(self.workers)
        log = self.tmp / f"worker-{n}.log"
        name = ["--hostname", f"{hostname or 'w'}{n}@%h"]
        worker = WorkerProcess({**self.env, **env}, log, *name, *args)
        self.workers.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    def close(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.stop()
        if self._producer is not None:
            self._producer.close()  # type: ignore[attr-defined]


def make_stack(tmp_path: Path, database_url: str, redis_url: str, mock_url: str,
               catalog: str = CATALOG) -> Stack:
    path = tmp_path / "catalog.yaml"
    path.write_text(catalog.format(url=mock_url))
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": database_url, "REDIS_URL": redis_url, "BATCHYARD_CONFIG": str(path),
        "BATCHYARD_TEST_KEY": "sk-test", "BATCHYARD_WORKER__RECONCILE_INTERVAL_S": "0.5",
        "BATCHYARD_WORKER__BACKOFF_BASE_S": "0.05", "BATCHYARD_WORKER__BACKOFF_MAX_S": "0.5",
    })
    settings = Settings(database_url=database_url, redis_url=redis_url, config=path)
    return Stack(tmp=tmp_path, settings=settings, env=env, mock_url=mock_url)
