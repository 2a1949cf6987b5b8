"""``python -m mock_upstream`` / ``batchyard mock-upstream``: serve the mock from the shell."""

from __future__ import annotations

import click

from mock_upstream.config import DEFAULT_HANG_SECONDS, MockConfig
from mock_upstream.server import run

__all__ = ["command"]

_HELP = """Serve the mock LLM upstream: each provider's exact wire format, errors and limits.

\b
Paths (POST):
  /v1/chat/completions, /chat/completions        OpenAI (Authorization: Bearer ...)
  /v1/embeddings                                 OpenAI embeddings
  /openai/deployments/{deployment}/chat/completions?api-version=...   Azure (api-key)
  /v1/messages, /messages                        Anthropic (x-api-key, anthropic-version)
  /v1beta/models/{model}:generateContent         Gemini (x-goog-api-key or ?key=; also /v1/)
  /model/{modelId}/converse                      Bedrock (Authorization: AWS4-HMAC-SHA256 ...)
Control: GET /_mock/stats, POST /_mock/reset, GET|POST /_mock/config, GET /_mock/health

\b
Directives, in the last user message or an x-mock-directive header (no [[ ]] there):
  [[mock:status=500]]  any 4xx/5xx in the provider's format (429: Retry-After 1)
  [[mock:status=429,retry_after=none]]   429 without Retry-After
  [[mock:overloaded]]  the provider's overloaded status (529 Anthropic, else 503)
  [[mock:context_length]]  context-length-exceeded 400
  [[mock:content_filter]]  the provider's content-filter outcome
  [[mock:tool_call]]   call the request's first tool with {} arguments
  [[mock:latency=1500]]  wait 1500 ms    [[mock:timeout]]  hang (--hang-seconds)
  [[mock:reset]]  drop the connection    [[mock:malformed]]  200 with truncated JSON
  [[mock:error_body]]  200 whose body is an error object
"""

_RATE = click.FloatRange(0.0, 1.0)


@click.command(name="mock-upstream", help=_HELP)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8900, show_default=True, type=click.IntRange(0, 65535))
@click.option("--latency-ms", default=0.0, show_default=True, type=click.FloatRange(0.0))
@click.option("--jitter-ms", default=0.0, show_default=True, type=click.FloatRange(0.0))
@click.option("--error-rate", default=0.0, show_default=True, type=_RATE, help="Share of 500s.")
@click.option(
    "--overload-rate",
    default=0.0,
    show_default=True,
    type=_RATE,
    help="Share of overloaded answers (529 Anthropic, 503 others).",
)
@click.option(
    "--rate-limit-rpm",
    default=None,
    type=click.IntRange(1),
    help="Requests per sliding 60 s window; over it => 429 + Retry-After.",
)
@click.option("--per-model-limits", is_flag=True, help="Apply --rate-limit-rpm per model.")
@click.option(
    "--timeout-rate",
    default=0.0,
    show_default=True,
    type=_RATE,
    help="Share of requests that hang for --hang-seconds.",
)
@click.option(
    "--hang-seconds", default=DEFAULT_HANG_SECONDS, show_default=True, type=click.FloatRange(0.0)
)
@click.option(
    "--reset-rate",
    default=0.0,
    show_default=True,
    type=_RATE,
    help="Share of connections reset without a response.",
)
@click.option(
    "--malformed-rate",
    default=0.0,
    show_default=True,
    type=_RATE,
    help="Share of 200s with a truncated JSON body.",
)
@click.option(
    "--error-body-rate",
    default=0.0,
    show_default=True,
    type=_RATE,
    help="Share of 200s whose body is an error object.",
)
@click.option("--seed", default=None, type=int, help="Seed for reproducible fault draws.")
def command(host: str, port: int, **settings: object) -> None:
    config = MockConfig.model_validate(settings)
    run(host, port, config, on_ready=_announce)


def _announce(url: str) -> None:
    click.echo(f"mock upstream listening on {url}")
