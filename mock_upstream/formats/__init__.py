"""One module per upstream wire protocol, and the table of which path speaks which."""

from __future__ import annotations

from mock_upstream.formats.anthropic import ANTHROPIC
from mock_upstream.formats.base import WireFormat
from mock_upstream.formats.bedrock import BEDROCK
from mock_upstream.formats.gemini import GEMINI
from mock_upstream.formats.openai import AZURE, OPENAI, OPENAI_EMBEDDINGS

__all__ = [
    "ANTHROPIC",
    "AZURE",
    "BEDROCK",
    "GEMINI",
    "OPENAI",
    "OPENAI_EMBEDDINGS",
    "ROUTES",
    "WireFormat",
]

ROUTES: tuple[tuple[str, WireFormat], ...] = (
    ("/v1/chat/completions", OPENAI),
    ("/chat/completions", OPENAI),
    ("/v1/embeddings", OPENAI_EMBEDDINGS),
    ("/embeddings", OPENAI_EMBEDDINGS),
    ("/openai/deployments/{deployment}/chat/completions", AZURE),
    ("/v1/messages", ANTHROPIC),
    ("/messages", ANTHROPIC),
    ("/v1beta/models/{model}:generateContent", GEMINI),
    ("/v1/models/{model}:generateContent", GEMINI),
    ("/model/{model_id}/converse", BEDROCK),
)
"""``POST`` paths served, each with its wire format."""
