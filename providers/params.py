"""Parameters a provider cannot honour, and the catalog's rule for them.

Every adapter declares, for each ``ChatRequest`` field, whether it translates it or cannot
honour it. A field it cannot honour is, per the deployment's ``unsupported_params``:

- ``drop``: omitted from the upstream request (the adapter never sees it);
- ``reject``: refused with a ``BadRequestError`` naming the parameter and the provider, before
  any call is made.

A value that asks for nothing (``n=1``, ``logprobs=false``, penalties of 0, ...) is not a use of
the parameter. Fields in ``INERT_PARAMS`` do not change what a model generates (an end-user id,
OpenAI's stored-completion tags), so an adapter without a place for them omits them quietly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.catalog import Deployment
from schemas.chat import ChatRequest
from schemas.errors import BadRequestError

__all__ = ["INERT_PARAMS", "STRUCTURAL_FIELDS", "ParamSupport", "above"]

STRUCTURAL_FIELDS = frozenset({"model", "messages", "stream"})
"""Handled by every adapter the same way: model replaced, messages translated, never streamed."""

INERT_PARAMS = frozenset({"user", "metadata"})
"""Fields that do not change the completion; omitted where the wire format has no place."""

_NEUTRAL: dict[str, object] = {
    "n": 1,
    "logprobs": False,
    "top_logprobs": 0,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "parallel_tool_calls": True,
    "logit_bias": {},
}

_UNSET = object()

ValueRule = Callable[[Any], str | None]
"""Given a value of a supported field, why the provider cannot honour it (or None)."""


def above(limit: float) -> ValueRule:
    """A rule refusing numbers above ``limit`` (e.g. a provider whose temperature stops at 1)."""

    def rule(value: Any) -> str | None:
        return f"{value} is above its maximum of {limit:g}" if value > limit else None

    return rule


@dataclass(frozen=True)
class ParamSupport:
    """What an adapter does with each request field."""

    supported: frozenset[str]
    unsupported: frozenset[str] = frozenset()
    value_rules: Mapping[str, ValueRule] = field(default_factory=dict)

    @classmethod
    def all_but(cls, unsupported: frozenset[str]) -> ParamSupport:
        """Everything is translated except ``unsupported`` (the OpenAI-compatible family)."""
        every = frozenset(ChatRequest.model_fields) - STRUCTURAL_FIELDS
        return cls(supported=every - unsupported, unsupported=unsupported)

    def apply(self, req: ChatRequest, deployment: Deployment, provider: str) -> ChatRequest:
        """The request with unhonourable fields dropped, or a BadRequestError when rejecting."""
        problems = self.problems(req)
        idle = [n for n in self.unsupported if getattr(req, n) is not None and n not in problems]
        if not problems:
            return req.model_copy(update=dict.fromkeys(idle)) if idle else req
        if deployment.unsupported_params == "reject":
            listed = "; ".join(f"{name} ({why})" for name, why in problems.items())
            raise BadRequestError(
                f"{provider} cannot honour parameter(s): {listed}. Remove them, or set "
                f"unsupported_params: drop on deployment {deployment.name or deployment.model!r}",
                provider=provider,
            )
        return req.model_copy(update=dict.fromkeys([*problems, *idle]))

    def problems(self, req: ChatRequest) -> dict[str, str]:
        """Each field set on ``req`` that this provider cannot honour, with the reason."""
        found: dict[str, str] = {}
        for name in sorted(self.unsupported):
            value = getattr(req, name)
            if value is not None and value != _NEUTRAL.get(name, _UNSET):
                found[name] = "not supported"
        for name, rule in sorted(self.value_rules.items()):
            value = getattr(req, name)
            why = None if value is None else rule(value)
            if why is not None:
                found[name] = why
        return found

