"""The OpenAI chat completions wire format, and every provider that speaks it.

OpenAI, Azure OpenAI, Groq, Together, Mistral, Fireworks, DeepSeek, OpenRouter, vLLM, llama.cpp
and Ollama differ only in data (URL path, auth header, api-version, the few fields they cannot
honour or spell differently), so they are instances of one class: see ``providers.registry``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import httpx

from providers.base import WireRequest
from providers.completion import read_json
from providers.errors import error_for_status
from providers.params import INERT_PARAMS, ParamSupport
from schemas.catalog import Deployment
from schemas.chat import ChatRequest, ChatResult, Usage
from schemas.errors import (
    ContentFilteredError,
    ContextLengthError,
    MalformedResponseError,
    UpstreamError,
)

__all__ = ["OpenAICompatible", "usage_from_openai"]

_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
_FILTER_CODES = frozenset({"content_filter", "content_policy_violation"})


def usage_from_openai(raw: dict[str, Any] | None) -> Usage:
    """Normalise an OpenAI ``usage`` object (cached tokens live in prompt_tokens_details)."""
    raw = raw or {}
    details = raw.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
    )


@lru_cache(maxsize=1024)
def _url(url: str, api_version: str | None) -> httpx.URL:
    """The parsed URL, kept: parsing it was half the cost of building each request."""
    return httpx.URL(url, params=None if api_version is None else {"api-version": api_version})


@lru_cache(maxsize=64)
def _support(unsupported: frozenset[str]) -> ParamSupport:
    """Built once per set of unsupported fields: it was built again for every request."""
    return ParamSupport.all_but(unsupported)


@dataclass(frozen=True)
class OpenAICompatible:
    """An OpenAI-compatible provider, described by data.

    ``path`` may name ``{model}`` (Azure puts the deployment in the path). ``api_version`` is the
    default ``api-version`` query value, sent only when set (a deployment's own
    ``api_version`` wins). ``unsupported`` are fields the provider cannot honour (see
    ``providers.params``), ``renames`` fields it spells differently, and ``omit`` inert fields
    it refuses to receive.
    """

    name: str
    auth_header: str = "Authorization"
    auth_prefix: str = "Bearer "
    path: str = "/chat/completions"
    api_version: str | None = None
    unsupported: frozenset[str] = frozenset()
    renames: Mapping[str, str] = field(default_factory=dict)
    omit: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.omit <= INERT_PARAMS:
            raise ValueError(f"{self.name}: only inert fields may be omitted, not {self.omit}")

    @property
    def params(self) -> ParamSupport:
        return _support(self.unsupported)

    def build_request(self, req: ChatRequest, deployment: Deployment) -> httpx.Request:
        wire = self.wire_request(req, deployment)
        return httpx.Request("POST", wire.url, headers=wire.headers, content=wire.body)

    def wire_request(self, req: ChatRequest, deployment: Deployment) -> WireRequest:
        """``build_request``'s parts, before any httpx object is made: what the worker's
        client sends (see ``providers.client``)."""
        req = self.params.apply(req, deployment, self.name)
        body = req.model_dump(mode="json", exclude_none=True, exclude=set(self.omit))
        for ours, theirs in self.renames.items():
            if ours in body:
                body[theirs] = body.pop(ours)
        body["model"] = deployment.model
        headers = {"content-type": "application/json", **deployment.headers}
        if deployment.api_key is not None:
            headers[self.auth_header] = self.auth_prefix + deployment.api_key.get_secret_value()
        url = deployment.base_url.rstrip("/") + self.path.format(model=deployment.model)
        version = deployment.api_version or self.api_version
        query = version if self.api_version and version else None
        return WireRequest(_url(url, query), headers, json.dumps(body).encode())

    def parse_wire(self, status: int, headers: Mapping[str, str], content: bytes
                   ) -> ChatResult | None:
        """``parse_response`` for a plain success, from the status, the (case-insensitive)
        headers and the decoded body; None when anything else is there (an error status or
        body, no JSON object, no choices): ``parse_response`` then handles it whole."""
        if status >= 400:
            return None
        try:
            body = json.loads(content)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(body, dict) or "error" in body or not isinstance(
                body.get("choices"), list):
            return None
        return ChatResult(
            body=body, usage=usage_from_openai(body.get("usage")),
            request_id=headers.get("x-request-id", "") or headers.get("apim-request-id", "")
            or str(body.get("id", "")),
            status_code=status, text=_as_text(content),
        )

    def parse_response(self, resp: httpx.Response) -> ChatResult:
        body = read_json(resp, self.name)
        if resp.status_code >= 400 or "error" in body:
            raise self._error(resp, body)
        if not isinstance(body.get("choices"), list):
            raise MalformedResponseError(
                "response has no choices", provider=self.name, status=resp.status_code
            )
        return ChatResult(
            body=body,
            usage=usage_from_openai(body.get("usage")),
            request_id=resp.headers.get("x-request-id", "")
            or resp.headers.get("apim-request-id", "")
            or str(body.get("id", "")),
            status_code=resp.status_code,
            text=_as_text(resp.content),
        )

    def _error(self, resp: httpx.Response, body: dict[str, Any]) -> UpstreamError:
        err = body.get("error")
        err = err if isinstance(err, dict) else {"message": str(err)}
        message = str(err.get("message") or resp.reason_phrase or "upstream error")
        code = str(err.get("code") or "")
        status = resp.status_code if resp.status_code >= 400 else 500
        if code in _CONTEXT_CODES:
            return ContextLengthError(message, provider=self.name, status=status)
        if code in _FILTER_CODES:
            return ContentFilteredError(message, provider=self.name, status=status)
        if resp.status_code < 400:  # a 200 whose body is an error: treat as a server fault
            return error_for_status(httpx.Response(500), self.name, message)
        return error_for_status(resp, self.name, message)


def _as_text(content: bytes) -> str | None:
    """The body's JSON text when it is one object (not a list ``read_json`` unwrapped), in
    UTF-8; else None, and the parsed body is serialised again instead."""
    if content.lstrip()[:1] != b"{":
        return None
    try:
        return content.decode()
    except UnicodeDecodeError:  # JSON in UTF-16 or UTF-32: valid, but stored re-encoded
        return None
