"""What every provider adapter is: pure translation between our request and a wire format."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import httpx

from providers.params import ParamSupport
from schemas.catalog import Deployment
from schemas.chat import ChatRequest, ChatResult

__all__ = ["Provider", "WireProvider", "WireRequest"]


class Provider(Protocol):
    """An upstream wire protocol.

    ``build_request`` turns the unified request into the provider's HTTP request;
    ``parse_response`` turns any HTTP response into a ``ChatResult`` or raises the mapped
    ``UpstreamError``. No environment reads, no client, no database. ``params`` declares what
    it does with each request field (see ``providers.params``).
    """

    @property
    def name(self) -> str: ...

    @property
    def params(self) -> ParamSupport: ...

    def build_request(self, req: ChatRequest, deployment: Deployment) -> httpx.Request: ...

    def parse_response(self, resp: httpx.Response) -> ChatResult: ...


@dataclass(frozen=True, slots=True)
class WireRequest:
    """A POST as bytes: the parts of a provider's request without httpx's objects around them."""

    url: httpx.URL
    headers: dict[str, str]
    body: bytes


@runtime_checkable
class WireProvider(Provider, Protocol):
    """A provider the worker's client can call without httpx's request and response objects
    (they cost about 30% of the client's CPU per call, docs/PERFORMANCE.md): ``wire_request`` gives
    what ``build_request`` would send, and ``parse_wire`` parses a plain success as
    ``parse_response`` would, or returns None to hand the response to ``parse_response``."""

    def wire_request(self, req: ChatRequest, deployment: Deployment) -> WireRequest: ...

    def parse_wire(self, status: int, headers: Mapping[str, str], content: bytes
                   ) -> ChatResult | None: ...
