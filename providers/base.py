"""What every provider adapter is: pure translation between our request and a wire format."""

from __future__ import annotations

from typing import Protocol

import httpx

from providers.params import ParamSupport
from schemas.catalog import Deployment
from schemas.chat import ChatRequest, ChatResult

__all__ = ["Provider"]


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
