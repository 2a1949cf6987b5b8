"""One job across three wire formats (OpenAI-compatible, Anthropic, Gemini) on the mock
upstream: every line comes back in the same normalised OpenAI shape."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from schemas.jobs import JobStatus
from tests.stack import Stack, make_stack

CATALOG = """\
deployments:
  oai:
    provider: openai
    base_url: {url}/v1
    model: mix-openai
    api_key_env: BATCHYARD_TEST_KEY
    pricing: {{input: "0.15", output: "0.60"}}
  claude:
    provider: anthropic
    base_url: {url}/v1
    model: mix-anthropic
    api_key_env: BATCHYARD_TEST_KEY
    pricing: {{input: "0.80", output: "4.00"}}
  gem:
    provider: gemini
    base_url: {url}/v1beta
    model: mix-gemini
    api_key_env: BATCHYARD_TEST_KEY
    pricing: {{input: "0.10", output: "0.40"}}
models:
  m-openai: {{deployments: [oai]}}
  m-anthropic: {{deployments: [claude]}}
  m-gemini: {{deployments: [gem]}}
"""


@pytest.fixture
def mixed(tmp_path: Path, redis_url: str, mock: object) -> Iterator[Stack]:
    url = f"sqlite:///{tmp_path / 'mix.db'}"
    s = make_stack(tmp_path, url, redis_url, mock.url, CATALOG)  # type: ignore[attr-defined]
    yield s
    s.close()


def test_a_job_spanning_three_wire_formats_gets_one_output_shape(mixed: Stack) -> None:
    mixed.start_worker()
    rows = []
    for model in ("m-openai", "m-anthropic", "m-gemini"):
        for i in range(10):
            rows.append({
                "custom_id": f"{model}-{i}", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": model, "max_tokens": 64, "temperature": 0.2, "messages": [
                    {"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": f"Name a colour ({i})"}]},
            })
    job = mixed.producer.submit(rows, tier="high")

    final = mixed.producer.wait(job.id, timeout=120)

    assert final.status is JobStatus.COMPLETED
    lines = list(mixed.producer.results(job.id))
    assert len(lines) == 30 and all(line.error is None for line in lines)
    for line in lines:
        body = line.response.body  # type: ignore[union-attr]
        assert body["object"] == "chat.completion"
        choice = body["choices"][0]
        assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
        assert choice["finish_reason"] in {"stop", "length"}
        assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["completion_tokens"] > 0
    stats = httpx.get(f"{mixed.mock_url}/_mock/stats").json()
    assert stats["by_kind"] == {"openai": 10, "anthropic": 10, "gemini": 10}
