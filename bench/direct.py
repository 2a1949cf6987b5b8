"""The limit: a direct async client calling the mock upstream, no gateway in between.

Run as its own process (``python -m bench.direct --client aiohttp --concurrency 64 ...``) so it
shares no GIL with the mock or the runner; it prints one JSON object. Clients:

- ``httpx``: httpx.AsyncClient on its default transport (httpcore), one pool;
- ``httpx-aiohttp``: the same httpx API over the aiohttp transport (what batchyard uses);
- ``aiohttp``: raw aiohttp, the ceiling for a Python client here;
- ``batchyard``: batchyard's own UpstreamClient + OpenAI adapter (request building, response
  parsing into ChatResult), i.e. the client layer the worker engine runs on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["main", "run"]

BODY: dict[str, Any] = {"model": "mock-up", "max_tokens": 16,
                        "messages": [{"role": "user", "content": "Classify item 1 as A or B."}]}
CLIENTS = ("httpx", "httpx-aiohttp", "aiohttp", "batchyard")

Call = Callable[[], Awaitable[None]]


async def _drive(call: Call, concurrency: int, count: int, seconds: float) -> dict[str, Any]:
    """``concurrency`` loops calling until ``count`` calls are done or ``seconds`` pass."""
    latencies: list[float] = []
    errors = 0
    issued = 0
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal issued, errors
        while issued < count and time.perf_counter() < deadline:
            issued += 1
            started = time.perf_counter()
            try:
                await call()
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    cpu = time.process_time()
    tasks = [asyncio.create_task(loop()) for _ in range(concurrency)]
    # at the deadline calls still queued in a slow client's pool are dropped, not awaited
    _, pending = await asyncio.wait(tasks, timeout=seconds + 1)
    for task in pending:
        task.cancel()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    latencies.sort()
    ok = len(latencies)
    return {
        "requests": ok, "errors": errors, "seconds": round(elapsed, 3),
        "rps": round(ok / elapsed, 1) if elapsed else 0.0,
        "cpu_ms_per_request": round(cpu * 1000 / ok, 3) if ok else None,
        "p50_ms": round(latencies[ok // 2] * 1000, 2) if ok else None,
        "p99_ms": round(latencies[min(ok - 1, int(ok * 0.99))] * 1000, 2) if ok else None,
    }


async def _with_client(client: str, url: str, concurrency: int,
                       job: Callable[[Call], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    endpoint = f"{url}/v1/chat/completions"
    headers = {"Authorization": "Bearer sk-bench"}
    if client == "aiohttp":
        import aiohttp

        conn = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=conn) as session:
            async def call_aiohttp() -> None:
                async with session.post(endpoint, json=BODY, headers=headers) as resp:
                    await resp.read()
                    resp.raise_for_status()
            return await job(call_aiohttp)
    if client == "batchyard":
        return await _with_batchyard(url, concurrency, job)
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    transport: Any = None
    if client == "httpx-aiohttp":
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=limits)
    async with httpx.AsyncClient(limits=limits, transport=transport, timeout=60) as http:
        async def call_httpx() -> None:
            resp = await http.post(endpoint, json=BODY, headers=headers)
            resp.raise_for_status()
        return await job(call_httpx)


async def _with_batchyard(url: str, concurrency: int,
                          job: Callable[[Call], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    from decimal import Decimal

    from providers.client import UpstreamClient
    from providers.registry import get_provider
    from schemas.catalog import Deployment, Pricing
    from schemas.chat import ChatRequest
    from schemas.settings import UpstreamSettings

    client = UpstreamClient(UpstreamSettings(max_connections=concurrency))
    deployment = Deployment(name="mock", provider="openai", base_url=f"{url}/v1",
                            model="mock-up", api_key="sk-bench",
                            pricing=Pricing(input=Decimal("0.15"), output=Decimal("0.60")))
    provider = get_provider("openai")
    raw = json.dumps(BODY)

    async def call() -> None:
        await client.send(provider, ChatRequest.model_validate_json(raw), deployment)

    try:
        return await job(call)
    finally:
        await client.aclose()


def run(client: str, url: str, concurrency: int, count: int, seconds: float,
        loop: str = "uvloop") -> dict[str, Any]:
    """One measurement; a short warm-up first so connections are open.

    ``loop`` is the event loop, uvloop by default: the worker's engine runs on it, so the limit
    does too (asyncio's own loop costs a direct aiohttp client about 15% more CPU per call).
    """
    from workers.engine import new_loop

    async def main() -> dict[str, Any]:
        async def job(call: Call) -> dict[str, Any]:
            await _drive(call, concurrency, min(count, concurrency), min(seconds, 5))
            return await _drive(call, concurrency, count, seconds)
        return await _with_client(client, url, concurrency, job)

    with asyncio.Runner(loop_factory=lambda: new_loop(loop)) as runner:
        return runner.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=CLIENTS, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--model", default=BODY["model"], help="the body's model name")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    BODY["model"] = args.model
    result = run(args.client, args.url, args.concurrency, args.count, args.seconds, args.loop)
    print(json.dumps({"client": args.client, "concurrency": args.concurrency,
                      "loop": args.loop, **result}))


if __name__ == "__main__":
    main()
