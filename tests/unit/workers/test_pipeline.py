"""One attempt of one request: failover, fallbacks, waiting, policies and the route record.

The upstream is a fake client (each deployment answers from a script); limits and health run
in the real Redis when a test needs them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from providers.base import Provider
from providers.client import Reply
from routing.catalog import parse_catalog
from routing.limits import Limiter
from routing.router import Router
from schemas.catalog import Catalog, Deployment
from schemas.chat import ChatRequest, ChatResult, Usage
from schemas.errors import BadRequestError, ContextLengthError, ServerError
from schemas.jobs import RoutingOptions
from schemas.outcomes import Claimed, Outcome, OutcomeKind
from schemas.settings import WorkerSettings
from workers.pipeline import Pipeline

CATALOG = """
deployments:
  a: {provider: openai, base_url: "http://x/v1", model: a, tags: {region: eu}}
  b: {provider: openai, base_url: "http://x/v1", model: b, tags: {region: us}}
  c: {provider: openai, base_url: "http://x/v1", model: c, rpm: 1, limit_window_s: 30}
models:
  m: {deployments: [a, b], strategy: ordered, fallbacks: [big]}
  big: {deployments: [c]}
  solo: {deployments: [a]}
"""


class FakeClient:
    """Answers per deployment: a callable raising an error, or a success."""

    def __init__(self, errors: dict[str, Callable[[], BaseException]] | None = None) -> None:
        self.errors = errors or {}
        self.calls: list[str] = []

    async def send(self, provider: Provider, req: ChatRequest, deployment: Deployment
                   ) -> Reply:
        self.calls.append(deployment.name)
        if deployment.name in self.errors:
            raise self.errors[deployment.name]()
        body = {"object": "chat.completion", "model": deployment.model}
        return Reply(ChatResult(body=body, usage=Usage(prompt_tokens=3, completion_tokens=2)),
                     latency_ms=12.0)


def _row(model: str = "m", attempts: int = 1, seq: int = 0, **routing: Any) -> Claimed:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    return Claimed(job_id="batch_x", seq=seq, custom_id="c", model=model, body=body,
                   attempts=attempts, claim="w1",
                   routing=RoutingOptions(**routing) if routing else None)


def _run(catalog: Catalog, client: FakeClient, *rows: Claimed, redis_url: str | None = None,
         max_attempts: int = 3) -> list[Outcome]:
    async def main() -> list[Outcome]:
        limiter = Limiter(redis_url, catalog.routing) if redis_url else None
        pipeline = Pipeline(Router(catalog, limiter), client,  # type: ignore[arg-type]
                            WorkerSettings(max_attempts=max_attempts, backoff_base_s=0.1))
        try:
            return [await pipeline.run(row) for row in rows]
        finally:
            await pipeline.aclose()

    return asyncio.run(main())


def _calls(outcome: Outcome) -> list[tuple[str, str, int | None]]:
    route = json.loads(outcome.route or "{}")
    return [(c["model"], c["deployment"], c["status"]) for c in route["calls"]]


def test_a_failing_deployment_fails_over_within_the_attempt() -> None:
    client = FakeClient({"a": lambda: ServerError("down", status=500)})

    [out] = _run(parse_catalog(CATALOG), client, _row())

    assert out.kind is OutcomeKind.SUCCEEDED and out.deployment == "b"
    assert _calls(out) == [("m", "a", 500), ("m", "b", 200)]


def test_a_context_length_rejection_moves_to_the_fallback_model() -> None:
    client = FakeClient({"a": lambda: ContextLengthError("too long", status=400)})

    [out] = _run(parse_catalog(CATALOG), client, _row())

    assert out.kind is OutcomeKind.SUCCEEDED and out.deployment == "c"
    assert json.loads(out.route or "")["path"] == ["m", "big"]
    assert client.calls == ["a", "c"]  # b is in the group that rejected the prompt: skipped


def test_with_nowhere_left_a_retryable_error_is_retried_later_then_given_up() -> None:
    client = FakeClient({"a": lambda: ServerError("down", status=500)})
    cat = parse_catalog(CATALOG)

    early, last = _run(cat, client, _row("solo", attempts=1), _row("solo", attempts=3))

    assert early.kind is OutcomeKind.DEFERRED and not early.throttled
    assert early.not_before is not None and early.not_before > time.time()
    assert last.kind is OutcomeKind.FAILED and last.error_code == "server_error"
    assert "gave up after 3 attempts" in (last.error_message or "")


def test_a_request_error_is_not_tried_elsewhere() -> None:
    client = FakeClient({"a": lambda: BadRequestError("bad field", status=400)})

    [out] = _run(parse_catalog(CATALOG), client, _row())

    assert out.kind is OutcomeKind.FAILED and out.error_code == "invalid_request"
    assert client.calls == ["a"]


def test_required_tags_are_never_relaxed() -> None:
    client = FakeClient({"a": lambda: ServerError("down", status=500)})

    [out] = _run(parse_catalog(CATALOG), client, _row(require_tags={"region": "eu"}))

    assert client.calls == ["a"]  # b (us) and c (no tags) are never tried
    assert out.kind is OutcomeKind.DEFERRED


def test_a_full_deployment_makes_the_request_wait_without_using_an_attempt(redis_url: str
                                                                          ) -> None:
    client = FakeClient()

    first, second = _run(parse_catalog(CATALOG), client, _row("big", seq=0),
                         _row("big", seq=1), redis_url=redis_url)

    assert first.kind is OutcomeKind.SUCCEEDED
    assert second.kind is OutcomeKind.DEFERRED and second.throttled
    assert second.error_code == "waiting_for_capacity"
    assert second.not_before is not None and 25 < second.not_before - time.time() <= 31
    assert json.loads(second.route or "")["waits"] == 1
    assert client.calls == ["c"]


@pytest.mark.parametrize(("policy", "kind", "code"), [
    ("wait", OutcomeKind.DEFERRED, "waiting_for_healthy_deployment"),
    ("fail", OutcomeKind.FAILED, "no_healthy_deployment"),
])
def test_when_every_eligible_deployment_is_broken_the_policy_decides(
        redis_url: str, policy: str, kind: OutcomeKind, code: str) -> None:
    cat = parse_catalog(CATALOG + f"routing: {{when_unavailable: {policy}, "
                                  "breaker: {consecutive_failures: 1, cooldown_s: 60}}\n")
    client = FakeClient({"a": lambda: ServerError("down", status=500)})

    broke, after = _run(cat, client, _row(require_tags={"region": "eu"}, seq=0),
                        _row(require_tags={"region": "eu"}, seq=1), redis_url=redis_url)

    assert broke.kind is OutcomeKind.DEFERRED  # the call that opened the breaker
    assert after.kind is kind and after.error_code == code
    assert "'m' with region=eu" in (after.error_message or "")
    assert "a: breaker open" in (after.error_message or "")
    assert after.throttled is (kind is OutcomeKind.DEFERRED)
    assert client.calls == ["a"]


def test_an_unreachable_routing_state_waits_and_sends_nothing() -> None:
    client = FakeClient()
    cat = parse_catalog(CATALOG)

    async def main() -> Outcome:
        pipeline = Pipeline(Router(cat, Limiter("redis://127.0.0.1:1/0", cat.routing)),
                            client, WorkerSettings())  # type: ignore[arg-type]
        try:
            return await pipeline.run(_row())
        finally:
            await pipeline.aclose()

    out = asyncio.run(main())

    assert out.kind is OutcomeKind.DEFERRED and out.throttled
    assert out.error_code == "routing_unavailable"
    assert client.calls == []


def test_a_crashing_call_fails_loudly_and_frees_its_admission(redis_url: str) -> None:
    cat = parse_catalog(CATALOG)
    client = FakeClient({"c": lambda: RuntimeError("a bug")})

    async def main() -> tuple[Outcome, int]:
        limiter = Limiter(redis_url, cat.routing)
        pipeline = Pipeline(Router(cat, limiter), client,  # type: ignore[arg-type]
                            WorkerSettings())
        try:
            out = await pipeline.run(_row("big"))
            state = await limiter.peek([cat.deployments["c"]])
            return out, state["c"].in_flight
        finally:
            await pipeline.aclose()

    out, in_flight = asyncio.run(main())

    assert out.kind is OutcomeKind.FAILED and out.error_code == "internal_error"
    assert "RuntimeError: a bug" in (out.error_message or "")
    assert in_flight == 0


def test_on_send_is_told_before_each_call_goes_upstream() -> None:
    # a fails (5xx), b answers: two calls, each told before it is sent
    catalog = parse_catalog(CATALOG)
    order: list[str] = []
    client = FakeClient({"a": lambda: ServerError("boom", status=503)})
    real_send = client.send

    async def send(provider: Provider, req: ChatRequest, deployment: Deployment) -> Reply:
        order.append(f"sent {deployment.name}")
        return await real_send(provider, req, deployment)

    client.send = send  # type: ignore[method-assign]

    async def main() -> Outcome:
        pipeline = Pipeline(Router(catalog, None), client,  # type: ignore[arg-type]
                            WorkerSettings())
        try:
            return await pipeline.run(_row(), on_send=lambda: order.append("told"))
        finally:
            await pipeline.aclose()

    outcome = asyncio.run(main())

    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert order == ["told", "sent a", "told", "sent b"]


def test_on_send_is_not_told_for_a_request_that_never_goes_upstream() -> None:
    told: list[int] = []
    bad = _row().model_copy(update={"body": "{not json"})

    async def main() -> Outcome:
        pipeline = Pipeline(Router(parse_catalog(CATALOG), None), FakeClient(),  # type: ignore[arg-type]
                            WorkerSettings())
        try:
            return await pipeline.run(bad, on_send=lambda: told.append(1))
        finally:
            await pipeline.aclose()

    assert asyncio.run(main()).kind is OutcomeKind.FAILED
    assert told == []
