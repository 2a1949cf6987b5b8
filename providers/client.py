"""The one place every upstream request is sent, and where transport failures become ours.

One pooled ``httpx.AsyncClient`` per worker process, on the aiohttp transport: httpx's default
transport (httpcore) slows down sharply once a pool holds hundreds of connections, while the
aiohttp transport keeps its rate at 1,000+ calls in flight (figures in docs/PERFORMANCE.md).

Providers that can (``WireProvider``: every OpenAI-compatible one) skip httpx's objects: their
request goes to the same aiohttp session as bytes, and a plain success is parsed from the
bytes; anything else (an error status or body) is wrapped in an ``httpx.Response`` and parsed
by ``parse_response`` as before, so errors map the same way on both paths.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import httpx
import yarl
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions

from providers.base import Provider, WireProvider, WireRequest
from schemas.catalog import Deployment
from schemas.chat import ChatRequest, ChatResult
from schemas.errors import ConnectionFailedError, UpstreamError, UpstreamTimeoutError
from schemas.settings import UpstreamSettings

__all__ = ["Reply", "UpstreamClient"]

_DISCONNECTS = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionError)


@dataclass(frozen=True)
class Reply:
    """A finished upstream call: the result, and how long it took."""

    result: ChatResult
    latency_ms: float


class _LeanTransport(AiohttpTransport):
    """httpx-aiohttp's transport with less to do per call (bench/direct.py measures it).

    Per call the stock transport builds an ``aiohttp.ClientTimeout``, hands aiohttp the URL as
    a string to parse again, and wraps the body in a stream read 16 KiB at a time through an
    async generator. Here timeouts and parsed URLs are kept (a handful per deployment), and
    the body (a chat completion: kilobytes) is read whole while the response is open, then
    handed to httpx as bytes; aiohttp errors are mapped to httpx's as before.
    """

    def __init__(self, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        self._urls: dict[str, yarl.URL] = {}
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}

    def get_client(self) -> aiohttp.ClientSession:
        """The pooled session, with no cookie jar: one client serves every tenant and key,
        so a cookie an upstream sets (a CDN's bot cookie, a balancer's affinity) must never
        ride along on a later call. aiohttp's default jar keeps and replays them (for named
        hosts), and costs a lookup per call besides."""
        connector = aiohttp.TCPConnector(
            keepalive_timeout=self.limits.keepalive_expiry, ssl=self.ssl_context,
            limit=self.limits.max_connections or 0)
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    def session(self) -> aiohttp.ClientSession:
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        return self.client

    def parsed(self, url: httpx.URL) -> yarl.URL:
        """The URL as aiohttp takes it, parsed once per deployment and path."""
        text = str(url)
        parsed = self._urls.get(text)
        if parsed is None:
            if len(self._urls) >= _CACHED_URLS:
                self._urls.clear()
            parsed = self._urls[text] = yarl.URL(text, encoded=True)
        return parsed

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        given = request.extensions.get("timeout", {})
        key = (given.get("connect"), given.get("read"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(
                sock_connect=key[0], sock_read=key[1], connect=given.get("pool"))
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self.session()
        with map_aiohttp_exceptions():
            async with session.request(
                request.method, self.parsed(request.url), headers=request.headers,
                data=request.content or None, allow_redirects=False, auto_decompress=False,
                compress=False, timeout=self._timeout(request),
            ) as got:
                body = await got.read()
        extensions: dict[str, object] = {"http_version": b"HTTP/1.1"}
        if got.reason:
            extensions["reason_phrase"] = got.reason.encode()
        return httpx.Response(got.status, headers=got.raw_headers,
                              stream=httpx.ByteStream(body), request=request,
                              extensions=extensions)


_CACHED_URLS = 1024
"""Parsed URLs kept by the transport (one per deployment and path; cleared when full)."""


class UpstreamClient:
    """Sends provider requests through one pooled async client; maps transport errors once."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self._settings = settings
        limits = httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
        )
        self._timeout = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)
        self._transport = _LeanTransport(limits)
        self._wire: dict[str, bool] = {}  # provider name -> speaks WireProvider
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._client = httpx.AsyncClient(
            transport=self._transport,
            timeout=self._timeout,
            follow_redirects=False,
        )

    async def send(self, provider: Provider, req: ChatRequest, deployment: Deployment) -> Reply:
        """Call the deployment; return the parsed result or raise an ``UpstreamError``."""
        wire = self._wire.get(provider.name)
        if wire is None:
            wire = self._wire[provider.name] = isinstance(provider, WireProvider)
        if wire:
            return await self._send_wire(provider, req, deployment)  # type: ignore[arg-type]
        request = provider.build_request(req, deployment)
        total = deployment.timeout_s or self._settings.timeout_s
        timeout = httpx.Timeout(total, connect=self._timeout.connect)
        request.extensions["timeout"] = timeout.as_dict()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(total):
                # Straight to the transport: AsyncClient.send's auth, redirect and cookie
                # layers do nothing here and cost a third of the client's CPU per call
                # (bench/direct.py; docs/PERFORMANCE.md).
                resp = await self._transport.handle_async_request(request)
                try:
                    await resp.aread()
                finally:
                    await resp.aclose()  # back to the pool, even when cut short
        except TimeoutError as exc:
            raise UpstreamTimeoutError(
                f"no answer within {total:g}s", provider=provider.name
            ) from exc
        except httpx.HTTPError as exc:
            raise _transport_error(exc, provider.name, total) from exc
        latency_ms = (time.perf_counter() - started) * 1000
        return Reply(result=provider.parse_response(resp), latency_ms=latency_ms)

    async def _send_wire(self, provider: WireProvider, req: ChatRequest, deployment: Deployment
                         ) -> Reply:
        """``send`` without httpx's objects: same session, timeouts and error mapping."""
        wire = provider.wire_request(req, deployment)
        total = deployment.timeout_s or self._settings.timeout_s
        started = time.perf_counter()
        try:
            async with self._transport.session().request(
                "POST", self._transport.parsed(wire.url), headers=wire.headers, data=wire.body,
                allow_redirects=False, compress=False, timeout=self._timeout_for(total),
            ) as got:
                content = await got.read()
                status, headers, reason = got.status, got.headers, got.reason
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors
            raise UpstreamTimeoutError(
                f"no answer within {total:g}s", provider=provider.name) from exc
        except (aiohttp.ClientConnectionError, OSError) as exc:  # a reset may come unwrapped
            raise ConnectionFailedError(f"connection failed: {exc or type(exc).__name__}",
                                        provider=provider.name) from exc
        except aiohttp.ClientError as exc:
            raise ConnectionFailedError(f"transport error: {exc or type(exc).__name__}",
                                        provider=provider.name) from exc
        latency_ms = (time.perf_counter() - started) * 1000
        result = provider.parse_wire(status, headers, content)
        if result is None:  # an error, or something odd: the full parser, as on httpx's path
            result = provider.parse_response(_as_httpx(wire, status, headers, reason, content))
        return Reply(result=result, latency_ms=latency_ms)

    def _timeout_for(self, total: float) -> aiohttp.ClientTimeout:
        """The whole call within ``total`` seconds, connecting within the connect timeout."""
        timeout = self._timeouts.get(total)
        if timeout is None:
            timeout = self._timeouts[total] = aiohttp.ClientTimeout(
                total=total, sock_connect=self._settings.connect_timeout_s)
        return timeout

    async def aclose(self) -> None:
        await self._client.aclose()


_DECODED = frozenset({"content-encoding", "content-length", "transfer-encoding"})
"""Headers that described the body on the wire; aiohttp has decoded it already."""


def _as_httpx(wire: WireRequest, status: int, headers: Mapping[str, str], reason: str | None,
              content: bytes) -> httpx.Response:
    """The response as ``parse_response`` takes it (its error path reads status, headers,
    reason phrase and body)."""
    kept = [(k, v) for k, v in headers.items() if k.lower() not in _DECODED]
    extensions: dict[str, object] = {"http_version": b"HTTP/1.1"}
    if reason:
        extensions["reason_phrase"] = reason.encode()
    return httpx.Response(status, headers=kept, content=content, extensions=extensions,
                          request=httpx.Request("POST", wire.url, headers=wire.headers))


def _transport_error(exc: httpx.HTTPError, provider: str, total: float) -> UpstreamError:
    """Classify a transport failure; the aiohttp transport reports a reset as a timeout."""
    cause = exc.__cause__
    if isinstance(cause, _DISCONNECTS) or isinstance(exc, httpx.NetworkError):
        return ConnectionFailedError(f"connection failed: {exc or type(exc).__name__}",
                                     provider=provider)
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeoutError(f"no answer within {total:g}s", provider=provider)
    return ConnectionFailedError(f"transport error: {exc or type(exc).__name__}",
                                 provider=provider)
