"""Upstream wire protocols: one adapter per protocol, and the one client that sends them."""

from __future__ import annotations

from providers.anthropic import AnthropicMessages
from providers.base import Provider
from providers.bedrock import BedrockConverse
from providers.client import Reply, UpstreamClient
from providers.gemini import GeminiGenerateContent
from providers.openai import OpenAICompatible
from providers.params import ParamSupport
from providers.registry import PROVIDERS, get_provider

__all__ = [
    "PROVIDERS",
    "AnthropicMessages",
    "BedrockConverse",
    "GeminiGenerateContent",
    "OpenAICompatible",
    "ParamSupport",
    "Provider",
    "Reply",
    "UpstreamClient",
    "get_provider",
]
