"""The shared upstream client: what one call leaves behind for the next."""

from __future__ import annotations

import asyncio

from aiohttp import web

from providers.client import UpstreamClient
from providers.registry import get_provider
from schemas.catalog import Deployment
from schemas.chat import ChatRequest
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
