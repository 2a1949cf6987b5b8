"""The /_mock/* control endpoints: stats, reset and the live config."""

from __future__ import annotations

import httpx

from mock_upstream import RunningMock
from tests.unit.mock_upstream.wire import ANTHROPIC, AZURE, BEDROCK, GEMINI, OPENAI


def test_stats_count_llm_calls_by_kind_model_and_status(
    client: httpx.Client, upstream: RunningMock
) -> None:
    OPENAI.post(client, "hi", model="gpt-a")
    OPENAI.post(client, "[[mock:status=500]]", model="gpt-a")
    AZURE.post(client, "hi", model="deploy-1")
    ANTHROPIC.post(client, "hi", model="claude-a")
    GEMINI.post(client, "hi", model="gemini-a")
    BEDROCK.post(client, "[[mock:status=429]]", model="nova")
    client.get("/_mock/config")
    stats = client.get("/_mock/stats").json()
    assert stats["total"] == 6
    assert stats["by_kind"] == {"openai": 2, "azure": 1, "anthropic": 1, "gemini": 1, "bedrock": 1}
    assert stats["by_model"] == {"gpt-a": 2, "deploy-1": 1, "claude-a": 1, "gemini-a": 1, "nova": 1}
    assert stats["by_status"] == {"200": 4, "500": 1, "429": 1}
    assert stats["max_in_window"]["gpt-a"] == 2
    assert stats["max_in_window_all"] == 6
    assert stats["in_flight"] == 0
    assert "arrivals" not in stats
    assert client.get("/_mock/stats").json()["total"] == 6


def test_stats_arrivals_and_window(client: httpx.Client) -> None:
    for _ in range(3):
        OPENAI.post(client, "hi", model="m")
    stats = client.get("/_mock/stats", params={"arrivals": "1", "window": "3600"}).json()
    arrivals = stats["arrivals"]["m"]
    assert len(arrivals) == 3
    assert arrivals == sorted(arrivals)
    assert stats["window_seconds"] == 3600
    assert stats["max_in_window"]["m"] == 3
    for window in ("0", "-1", "soon"):
        assert client.get("/_mock/stats", params={"window": window}).status_code == 400


def test_rejected_requests_are_counted(client: httpx.Client) -> None:
    client.post("/v1/chat/completions", content=b"not json", headers=OPENAI.headers)
    client.post("/v1/messages", json={"model": "claude"})
    stats = client.get("/_mock/stats").json()
    assert stats["total"] == 2
    assert stats["by_status"] == {"400": 1, "401": 1}


def test_reset_zeroes_the_stats_and_the_rate_window(serve: object) -> None:
    mock = serve(rate_limit_rpm=1)  # type: ignore[operator]
    with httpx.Client(base_url=mock.url) as client:
        assert OPENAI.post(client, "hi").status_code == 200
        assert OPENAI.post(client, "hi").status_code == 429
        assert client.post("/_mock/reset").status_code == 200
        assert client.get("/_mock/stats").json()["total"] == 0
        assert OPENAI.post(client, "hi").status_code == 200


def test_config_patch_changes_behaviour_live(client: httpx.Client, upstream: RunningMock) -> None:
    assert OPENAI.post(client, "hi").status_code == 200
    response = client.post("/_mock/config", json={"error_rate": 1.0, "latency_ms": 5})
    assert response.status_code == 200
    assert response.json()["error_rate"] == 1.0
    assert client.get("/_mock/config").json()["latency_ms"] == 5
    assert upstream.config.error_rate == 1.0
    assert OPENAI.post(client, "hi").status_code == 500
    client.post("/_mock/config", json={"error_rate": 0})
    assert OPENAI.post(client, "hi").status_code == 200


def test_invalid_config_patch_changes_nothing(client: httpx.Client) -> None:
    before = client.get("/_mock/config").json()
    for patch in ({"error_rate": 2.0}, {"latency_ms": 10, "bogus": 1}, [1, 2]):
        assert client.post("/_mock/config", json=patch).status_code == 400
    assert client.post("/_mock/config", content=b"{").status_code == 400
    assert client.get("/_mock/config").json() == before


def test_config_object_is_live(client: httpx.Client, upstream: RunningMock) -> None:
    upstream.config.overload_rate = 1.0
    assert ANTHROPIC.post(client, "hi").status_code == 529
    assert OPENAI.post(client, "hi").status_code == 503


def test_health(client: httpx.Client) -> None:
    assert client.get("/_mock/health").json() == {"status": "ok"}
    assert client.get("/_mock/stats").json()["total"] == 0
