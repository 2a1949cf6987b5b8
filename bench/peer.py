"""The peer: LiteLLM's proxy in front of the same mock upstream, driven at the same concurrency.

LiteLLM lives in its own virtualenv (``BENCH_LITELLM_VENV``, default ``.bench-venv``), never in
batchyard's: ``python -m venv .bench-venv && .bench-venv/bin/pip install 'litellm[proxy]==1.81.13'``
(a release from before the compromised LiteLLM uploads; see docs/PERFORMANCE.md). It runs with
``LITELLM_LOCAL_MODEL_COST_MAP=True`` (no download at start) and a master key, no database, as
many workers as batchyard has processes. The load comes from ``bench.direct`` (raw aiohttp) in
its own process, so the client costs the same on both sides.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.procs import ROOT, CpuMeter, MockProcess

__all__ = ["LITELLM_VENV", "litellm_available", "peer"]

LITELLM_VENV = Path(os.environ.get("BENCH_LITELLM_VENV", ROOT / ".bench-venv"))
MASTER_KEY = "sk-bench"
MODEL = "bench-model"
START_TIMEOUT_S = 120.0

CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/mock-up
      api_base: {url}/v1
      api_key: sk-bench
general_settings:
  master_key: {key}
litellm_settings:
  drop_params: true
  set_verbose: false
"""

_QUIET_LOGS = {
    "version": 1, "disable_existing_loggers": False,
    "handlers": {"default": {"class": "logging.StreamHandler"}},
    "loggers": {name: {"handlers": ["default"], "level": "WARNING", "propagate": False}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
}


def litellm_available() -> str | None:
    """None when LiteLLM can be run, else why not."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        return (f"no LiteLLM at {exe}: create it with `python -m venv {LITELLM_VENV} && "
                f"{LITELLM_VENV}/bin/pip install 'litellm[proxy]==1.81.13'`")
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Proxy:
    """``litellm --config ... --num_workers N`` in its own process group."""

    def __init__(self, mock_url: str, folder: Path, workers: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "litellm.yaml"
        config.write_text(CONFIG.format(model=MODEL, url=mock_url, key=MASTER_KEY))
        log_config = folder / "logging.json"  # no access-log line per request (ours: per chunk)
        log_config.write_text(json.dumps(_QUIET_LOGS))
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
               "LITELLM_MODE": "PRODUCTION", "DISABLE_SCHEMA_UPDATE": "True"}
        env.pop("DATABASE_URL", None)  # no spend logging database: the lightest LiteLLM
        self._log = open(folder / "litellm.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--host",
             "127.0.0.1", "--port", str(port), "--num_workers", str(workers),
             "--log_config", str(log_config), "--telemetry", "False"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._folder = folder

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("LiteLLM exited: " + self._tail())
            try:
                if httpx.get(f"{self.url}/health/liveliness", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"LiteLLM not ready after {START_TIMEOUT_S}s: {self._tail()}")

    def _tail(self) -> str:
        return (self._folder / "litellm.log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def drive(url: str, *, model: str, concurrency: int, count: int, seconds: float
          ) -> dict[str, Any]:
    """``bench.direct`` with raw aiohttp against ``url`` in its own process."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.direct", "--client", "aiohttp", "--url", url,
         "--concurrency", str(concurrency), "--count", str(count), "--seconds", str(seconds),
         "--model", model],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=seconds + 120,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def peer(mock: MockProcess, folder: Path, *, latency_ms: float, concurrency: int, count: int,
         workers: int) -> dict[str, Any]:
    """LiteLLM's rate on ``count`` requests at ``concurrency``; its CPU use beside it."""
    why = litellm_available()
    if why is not None:
        return {"error": why}
    mock.configure(latency_ms=latency_ms)
    proxy = _Proxy(mock.url, folder / "litellm", workers)
    try:
        proxy.wait_ready()
        drive(proxy.url, model=MODEL, concurrency=min(concurrency, 32), count=200, seconds=30)
        mock.reset()
        meter = CpuMeter({"litellm": proxy.proc.pid, "mock": mock.proc.pid})
        result = drive(proxy.url, model=MODEL, concurrency=concurrency, count=count,
                       seconds=600)
        result["cores"] = meter.stop()
        result["cpu_ms_per_request"] = round(
            result["cores"]["litellm"] * result["seconds"] * 1000 / max(1, result["requests"]), 3)
        result["upstream_calls"] = mock.stats()["total"]
    finally:
        proxy.stop()
    result.update(latency_ms=latency_ms, workers=workers)
    return result
