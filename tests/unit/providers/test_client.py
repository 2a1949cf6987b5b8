"""The shared upstream client: what one call leaves behind for the next, and how the byte
path of OpenAI-compatible calls maps failures (as the httpx path does)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from providers.client import UpstreamClient
from providers.registry import get_provider
from schemas.catalog import Deployment
from schemas.chat import ChatRequest
from schemas.errors import (
    ConnectionFailedError,
    RateLimitedError,
    UpstreamError,
    UpstreamTimeoutError,
)
from schemas.settings import UpstreamSettings

COMPLETION = {"id": "c1", "object": "chat.completion", "model": "m",
              "choices": [{"index": 0, "finish_reason": "stop",
                           "message": {"role": "assistant", "content": "hi"}}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


def test_cookies_an_upstream_sets_are_never_sent_on_later_calls() -> None:
    """One client serves every tenant and key: a cookie set by an upstream (a CDN's bot
    cookie, a load balancer's affinity) must not ride along on anybody's next call. (aiohttp
    keeps no cookie from an IP address, so the upstream is addressed by name.)"""
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        resp = web.json_response(COMPLETION)
        resp.set_cookie("__cf_bm", "tenant-a-session", path="/")
        return resp

    async def scenario() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        dep = Deployment(name="d", provider="openai", base_url=f"http://localhost:{port}/v1",
                         model="m")
        client = UpstreamClient(UpstreamSettings())
        req = ChatRequest.model_validate({"model": "m",
                                           "messages": [{"role": "user", "content": "x"}]})
        try:
            for _ in range(2):
                reply = await client.send(get_provider("openai"), req, dep)
                assert reply.result.usage.total_tokens == 4
        finally:
            await client.aclose()
            await runner.cleanup()

    asyncio.run(scenario())

    assert seen == [None, None]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _call_once(handler: Handler, timeout_s: float = 5.0) -> UpstreamError:
    """One call through the client's byte path (the OpenAI adapter) to ``handler``; the
    error it raised."""
    async def scenario() -> UpstreamError:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        dep = Deployment(name="d", provider="openai", timeout_s=timeout_s, model="m",
                         base_url=f"http://127.0.0.1:{runner.addresses[0][1]}/v1")
        client = UpstreamClient(UpstreamSettings())
        req = ChatRequest.model_validate({"model": "m",
                                          "messages": [{"role": "user", "content": "x"}]})
        try:
            with pytest.raises(UpstreamError) as raised:
                await client.send(get_provider("openai"), req, dep)
            return raised.value
        finally:
            await client.aclose()
            await runner.cleanup()

    return asyncio.run(scenario())


def test_a_429_maps_as_parse_response_maps_it_with_its_retry_after() -> None:
    async def limited(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "slow down", "type": "rate_limit"}},
                                 status=429, headers={"Retry-After": "7"})

    error = _call_once(limited)

    assert isinstance(error, RateLimitedError) and error.retryable
    assert (error.status, error.retry_after) == (429, 7.0)
    assert "slow down" in error.message


def test_a_connection_cut_mid_answer_is_a_retryable_connection_failure() -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "1000"})
        await resp.prepare(request)
        await resp.write(b'{"choices": [')
        assert request.transport is not None
        request.transport.close()  # the upstream goes away halfway through the body
        return resp

    error = _call_once(cut)

    assert isinstance(error, ConnectionFailedError) and error.retryable


def test_an_upstream_slower_than_the_deployment_timeout_is_a_timeout() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)  # the upstream's latency, not a wait for anything
        return web.json_response(COMPLETION)

    error = _call_once(slow, timeout_s=0.2)

    assert isinstance(error, UpstreamTimeoutError) and error.retryable
