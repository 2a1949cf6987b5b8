"""The handling every format shares: rate limit, latency, faults, directives, seeded draws."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from mock_upstream import RunningMock
from tests.helpers import wait_for
from tests.unit.mock_upstream.wire import ANTHROPIC, BEDROCK, GEMINI, OPENAI, WIRES, Wire

Serve = Callable[..., RunningMock]
by_name = pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.name)
RATE_LIMITED_TYPE = {
    "openai": "requests",
    "azure": "requests",
    "anthropic": "rate_limit_error",
    "gemini": "RESOURCE_EXHAUSTED",
    "bedrock": "ThrottlingException",
}


@by_name
def test_over_the_rpm_limit_is_a_429_with_retry_after(serve: Serve, wire: Wire) -> None:
    mock = serve(rate_limit_rpm=2)
    with httpx.Client(base_url=mock.url) as client:
        assert [wire.post(client, "hi").status_code for _ in range(2)] == [200, 200]
        response = wire.post(client, "hi")
    assert response.status_code == 429
    assert wire.error_type(response) == RATE_LIMITED_TYPE[wire.name]
    assert 1 <= int(response.headers["retry-after"]) <= 60


def test_openai_rate_limit_headers(serve: Serve) -> None:
    mock = serve(rate_limit_rpm=2)
    with httpx.Client(base_url=mock.url) as client:
        first, _, limited = (OPENAI.post(client, "hi") for _ in range(3))
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert re.fullmatch(r"(\d+m)?\d+(\.\d+)?s|\d+ms", limited.headers["x-ratelimit-reset-requests"])
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"


def test_anthropic_rate_limit_headers(serve: Serve) -> None:
    mock = serve(rate_limit_rpm=1)
    with httpx.Client(base_url=mock.url) as client:
        first, limited = ANTHROPIC.post(client, "hi"), ANTHROPIC.post(client, "hi")
    assert first.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert first.headers["anthropic-ratelimit-requests-remaining"] == "0"
    reset = limited.headers["anthropic-ratelimit-requests-reset"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", reset)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1


def test_per_model_limits_count_each_model_apart(serve: Serve) -> None:
    mock = serve(rate_limit_rpm=1, per_model_limits=True)
    with httpx.Client(base_url=mock.url) as client:
        statuses = [OPENAI.post(client, "hi", model=model).status_code for model in "aab"]
    assert statuses == [200, 429, 200]


def test_the_limit_is_over_all_models_by_default(serve: Serve) -> None:
    mock = serve(rate_limit_rpm=1)
    with httpx.Client(base_url=mock.url) as client:
        statuses = [OPENAI.post(client, "hi", model=model).status_code for model in "ab"]
    assert statuses == [200, 429]


def test_directive_429_without_retry_after(client: httpx.Client) -> None:
    response = OPENAI.post(client, "[[mock:status=429,retry_after=none]]")
    assert response.status_code == 429
    assert "retry-after" not in response.headers


def test_directive_429_with_a_chosen_retry_after(client: httpx.Client) -> None:
    response = GEMINI.post(client, "[[mock:status=429,retry_after=7]]")
    assert response.headers["retry-after"] == "7"


def test_header_directive_overrides_the_text(client: httpx.Client) -> None:
    response = OPENAI.post(
        client, "[[mock:status=500]]", headers={"x-mock-directive": "status=503"}
    )
    assert response.status_code == 503
    response = ANTHROPIC.post(client, "plain", headers={"x-mock-directive": "status=500"})
    assert (response.status_code, ANTHROPIC.error_type(response)) == (500, "api_error")


def test_unknown_directive_is_a_400(client: httpx.Client) -> None:
    response = OPENAI.post(client, "[[mock:explode]]")
    assert response.status_code == 400
    assert "explode" in response.json()["error"]["message"]


def test_directive_is_not_quoted_in_the_reply(client: httpx.Client) -> None:
    body = OPENAI.post(client, "Hello [[mock:latency=0]] there").json()
    assert OPENAI.text(body) == "Mock reply: Hello there"


def test_latency_directive_delays_the_answer(client: httpx.Client) -> None:
    started = time.monotonic()
    response = BEDROCK.post(client, "slow [[mock:latency=300]]")
    assert time.monotonic() - started >= 0.3
    assert response.json()["metrics"]["latencyMs"] == 300


def test_configured_latency_applies_to_every_request(serve: Serve) -> None:
    mock = serve(latency_ms=150)
    with httpx.Client(base_url=mock.url) as client:
        started = time.monotonic()
        body = BEDROCK.post(client, "hi").json()
    assert time.monotonic() - started >= 0.15
    assert body["metrics"]["latencyMs"] == 150


def test_timeout_directive_hangs_until_the_client_gives_up(upstream: RunningMock) -> None:
    with (
        httpx.Client(base_url=upstream.url, timeout=0.3) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        OPENAI.post(client, "[[mock:timeout]]")
    wait_for(lambda: upstream.stats.by_status["cancelled"] == 1, 5, "the call counted cancelled")
    assert upstream.stats.in_flight == 0


def test_timeout_answers_after_hang_seconds(serve: Serve) -> None:
    mock = serve(hang_seconds=0.2)
    with httpx.Client(base_url=mock.url) as client:
        started = time.monotonic()
        response = OPENAI.post(client, "[[mock:timeout]]")
    assert time.monotonic() - started >= 0.2
    assert response.status_code == 200


@by_name
def test_reset_drops_the_connection(
    client: httpx.Client, upstream: RunningMock, wire: Wire
) -> None:
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        wire.post(client, "[[mock:reset]]")
    assert upstream.stats.by_status["reset"] == 1
    assert wire.post(client, "hi").status_code == 200


@by_name
def test_malformed_is_a_200_with_truncated_json(client: httpx.Client, wire: Wire) -> None:
    response = wire.post(client, "[[mock:malformed]]")
    assert response.status_code == 200
    assert response.content.startswith(b"{")
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


@by_name
def test_error_body_is_a_200_carrying_an_error(client: httpx.Client, wire: Wire) -> None:
    response = wire.post(client, "[[mock:error_body]]")
    assert response.status_code == 200
    body = response.json()
    assert "error" in body or set(body) == {"message"}


@pytest.mark.parametrize(
    ("field", "expected"),
    [("error_rate", 500), ("overload_rate", 529), ("timeout_rate", 200), ("error_body_rate", 200)],
)
def test_configured_fault_rates(serve: Serve, field: str, expected: int) -> None:
    mock = serve(**{field: 1.0}, hang_seconds=0)
    with httpx.Client(base_url=mock.url) as client:
        response = ANTHROPIC.post(client, "hi")
    assert response.status_code == expected
    if field == "error_body_rate":
        assert response.json()["type"] == "error"


def test_configured_reset_and_malformed_rates(serve: Serve) -> None:
    with (
        httpx.Client(base_url=serve(reset_rate=1.0).url) as client,
        pytest.raises(httpx.TransportError),
    ):
        OPENAI.post(client, "hi")
    with httpx.Client(base_url=serve(malformed_rate=1.0).url) as client:
        response = OPENAI.post(client, "hi")
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_a_directive_replaces_the_fault_draw(serve: Serve) -> None:
    mock = serve(error_rate=1.0)
    with httpx.Client(base_url=mock.url) as client:
        assert OPENAI.post(client, "[[mock:latency=0]]").status_code == 200
        assert OPENAI.post(client, "no directive").status_code == 500


def _statuses(mock: RunningMock, n: int = 40) -> list[int]:
    with httpx.Client(base_url=mock.url) as client:
        return [OPENAI.post(client, "hi").status_code for _ in range(n)]


def test_seeded_fault_draws_repeat(serve: Serve) -> None:
    first = serve(error_rate=0.5, seed=7)
    statuses = _statuses(first)
    assert set(statuses) == {200, 500}
    assert _statuses(serve(error_rate=0.5, seed=7)) == statuses
    httpx.post(f"{first.url}/_mock/reset")
    assert _statuses(first) == statuses


def test_concurrency_is_recorded(upstream: RunningMock) -> None:
    def call(_: int) -> int:
        with httpx.Client(base_url=upstream.url) as client:
            return OPENAI.post(client, "[[mock:latency=300]]").status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(call, range(4))) == [200] * 4
    assert upstream.stats.max_in_flight >= 2
    assert upstream.stats.in_flight == 0
