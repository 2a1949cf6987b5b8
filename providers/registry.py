"""The explicit registry of provider adapters, by the name a catalog deployment uses."""

from __future__ import annotations

from providers.base import Provider
from providers.openai import OpenAICompatible
from schemas.errors import ConfigError

__all__ = ["PROVIDERS", "get_provider"]

PROVIDERS: dict[str, Provider] = {
    "openai": OpenAICompatible("openai"),
    "groq": OpenAICompatible("groq"),
    "together": OpenAICompatible("together"),
    "mistral": OpenAICompatible("mistral"),
    "fireworks": OpenAICompatible("fireworks"),
    "deepseek": OpenAICompatible("deepseek"),
    "openrouter": OpenAICompatible("openrouter"),
    "vllm": OpenAICompatible("vllm"),
    "llamacpp": OpenAICompatible("llamacpp"),
    "ollama": OpenAICompatible("ollama"),
}


def get_provider(name: str) -> Provider:
    """The adapter for a provider name, or a ConfigError listing the known ones."""
    try:
        return PROVIDERS[name]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise ConfigError(f"unknown provider {name!r}; known providers: {known}") from None
