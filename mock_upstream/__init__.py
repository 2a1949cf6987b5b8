"""The built-in mock LLM upstream: OpenAI, Azure, Anthropic, Gemini and Bedrock wire formats,
with latency, faults, rate limits and ``[[mock:...]]`` directives, for tests, demo and benches.

    with start_in_thread(MockConfig(latency_ms=50)) as mock:
        httpx.post(f"{mock.url}/v1/chat/completions", ...)
"""

from __future__ import annotations

from mock_upstream.config import MockConfig
from mock_upstream.directives import DIRECTIVE_HEADER, Directive, parse_directive
from mock_upstream.server import RunningMock, create_app, run, start_in_thread
from mock_upstream.stats import Stats, max_in_window
from mock_upstream.text import count_tokens

__all__ = [
    "DIRECTIVE_HEADER",
    "Directive",
    "MockConfig",
    "RunningMock",
    "Stats",
    "count_tokens",
    "create_app",
    "max_in_window",
    "parse_directive",
    "run",
    "start_in_thread",
]
