"""The explicit registry of provider adapters, by the name a catalog deployment uses.

The OpenAI-compatible family is data: each entry says only how it differs from OpenAI. Providers
that know only ``max_tokens`` get ``max_completion_tokens`` renamed to it (sent as-is, they would
ignore it); fields a provider documents as refused or ignored are declared ``unsupported`` so
the deployment's ``unsupported_params`` decides what happens to them.
"""

from __future__ import annotations

from providers.anthropic import AnthropicMessages
from providers.base import Provider
from providers.bedrock import BedrockConverse
from providers.gemini import GeminiGenerateContent
from providers.openai import OpenAICompatible
from schemas.errors import ConfigError

__all__ = ["AZURE_API_VERSION", "PROVIDERS", "get_provider"]

AZURE_API_VERSION = "2024-10-21"
"""The Azure OpenAI GA api-version sent when a deployment names none."""

_MAX_TOKENS = {"max_completion_tokens": "max_tokens"}
_NO_LOGPROBS = frozenset({"logprobs", "top_logprobs", "logit_bias"})

PROVIDERS: dict[str, Provider] = {
    "openai": OpenAICompatible("openai"),
    "azure": OpenAICompatible(
        "azure",
        auth_header="api-key",
        auth_prefix="",
        path="/openai/deployments/{model}/chat/completions",
        api_version=AZURE_API_VERSION,
    ),
    "groq": OpenAICompatible("groq", unsupported=_NO_LOGPROBS),
    "together": OpenAICompatible("together", renames=_MAX_TOKENS),
    "mistral": OpenAICompatible(
        "mistral",
        renames={**_MAX_TOKENS, "seed": "random_seed"},
        unsupported=_NO_LOGPROBS | {"reasoning_effort"},
        omit=frozenset({"user", "metadata"}),
    ),
    "fireworks": OpenAICompatible("fireworks", renames=_MAX_TOKENS),
    "deepseek": OpenAICompatible(
        "deepseek", renames=_MAX_TOKENS, unsupported=frozenset({"seed", "logit_bias"})
    ),
    "openrouter": OpenAICompatible("openrouter", renames=_MAX_TOKENS),
    "vllm": OpenAICompatible("vllm"),
    "llamacpp": OpenAICompatible("llamacpp", renames=_MAX_TOKENS),
    "ollama": OpenAICompatible("ollama", renames=_MAX_TOKENS, unsupported=_NO_LOGPROBS),
    "anthropic": AnthropicMessages(),
    "gemini": GeminiGenerateContent(),
    "bedrock": BedrockConverse(),
}


def get_provider(name: str) -> Provider:
    """The adapter for a provider name, or a ConfigError listing the known ones."""
    try:
        return PROVIDERS[name]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise ConfigError(f"unknown provider {name!r}; known providers: {known}") from None
