"""How many tokens a request will use, estimated before the call.

The estimate serves two decisions: whether a prompt fits a deployment's ``context_window``
(else the request goes to a fallback model with a larger one), and how many tokens to reserve
against a ``tpm`` limit before the call (settled with the provider's reported usage after).

The heuristic is the usual one for English text: about **four characters per token**, plus a
few tokens of framing per message. It needs no tokenizer files, is the same for every
provider, and errs a little either way (code and non-Latin scripts use more tokens per
character). Two things keep an error harmless: a context-length rejection from the upstream
moves the request along its fallback chain anyway, and a tpm reservation is replaced by the
real usage once the call returns.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from schemas.chat import ChatRequest

__all__ = ["CHARS_PER_TOKEN", "TokenEstimate", "estimate_tokens"]

CHARS_PER_TOKEN = 4
"""Characters of text per token (OpenAI's rule of thumb for English)."""
MESSAGE_OVERHEAD = 4
"""Tokens of role and separators around each message."""
REPLY_PRIMING = 3
"""Tokens that open the assistant's reply."""
MEDIA_TOKENS = 765
"""An image, audio clip or file part: a 1024×1024 image at high detail on OpenAI."""


@dataclass(frozen=True)
class TokenEstimate:
    """A request's expected size in tokens."""

    prompt: int
    output: int | None
    """The request's own output limit (max_tokens / max_completion_tokens), if it set one."""

    @property
    def window(self) -> int:
        """What must fit a context window: the prompt plus the output it asked room for."""
        return self.prompt + (self.output or 0)

    def reserve(self, default_completion: int) -> int:
        """Tokens to hold against a tpm limit until the real usage is known."""
        return self.prompt + (self.output or default_completion)


def estimate_tokens(req: ChatRequest) -> TokenEstimate:
    """The chars/4 estimate of ``req`` (text, tools and schema count; media parts a fixed sum)."""
    chars = 0
    media = 0
    for message in req.messages:
        chars += len(message.text())
        if isinstance(message.content, list):
            media += sum(1 for part in message.content if part.type != "text")
        if message.tool_calls:
            chars += len(json.dumps(message.tool_calls))
    for extra in (req.tools, req.response_format):
        if extra:
            chars += len(json.dumps(extra))
    prompt = (math.ceil(chars / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD * len(req.messages)
              + REPLY_PRIMING + MEDIA_TOKENS * media)
    return TokenEstimate(prompt=prompt, output=req.output_limit())
