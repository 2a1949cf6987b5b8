"""How many tokens a request will use, estimated before the call.

The estimate serves two decisions: whether a prompt fits a deployment's ``context_window``
(else the request goes to a fallback model with a larger one), and how many tokens to reserve
against a ``tpm`` limit before the call (settled with the provider's reported usage after:
the estimate never reaches a bill).

Text is counted with OpenAI's own tokenizer where one is on disk, else by a heuristic:

- **tiktoken, offline only.** With the ``tokens`` extra installed (``pip install
  'batchyard[tokens]'``) and the encoding's file pre-seeded in ``TIKTOKEN_CACHE_DIR`` (the
  file tiktoken itself would cache there, named by the SHA-1 of its download URL), OpenAI
  models are counted exactly: ``o200k_base`` for gpt-4o, gpt-4.1, gpt-4.5, gpt-5 and the
  o-series, ``cl100k_base`` for gpt-4 and gpt-3.5. The file is read and checked (SHA-256)
  here; nothing is ever downloaded. A missing or altered file, a model of another family
  (Anthropic, Gemini, Llama, ...) or no tiktoken at all falls back to the heuristic, said once
  per encoding in the log.
- **The heuristic**, the usual one for English text: about **four characters per token**. It
  is the same for every provider and errs a little either way (code and non-Latin scripts use
  more tokens per character).

Either way a few tokens of framing are added per message. Two things keep an error harmless: a
context-length rejection from the upstream moves the request along its fallback chain anyway,
and a tpm reservation is replaced by the real usage once the call returns.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from schemas.chat import ChatRequest

__all__ = [
    "CHARS_PER_TOKEN",
    "ENCODINGS",
    "TokenEstimate",
    "Tokenizer",
    "encoding_for_model",
    "estimate_tokens",
    "set_tokenizer",
]

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
"""Characters of text per token (OpenAI's rule of thumb for English)."""
MESSAGE_OVERHEAD = 4
"""Tokens of role and separators around each message."""
REPLY_PRIMING = 3
"""Tokens that open the assistant's reply."""
MEDIA_TOKENS = 765
"""An image, audio clip or file part: a 1024×1024 image at high detail on OpenAI."""

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/"


@dataclass(frozen=True)
class EncodingFile:
    """Where tiktoken downloads an encoding from, its SHA-256, and its split pattern (as
    ``tiktoken_ext.openai_public`` defines them)."""

    url: str
    sha256: str
    pattern: str

    def cache_name(self) -> str:
        """The file's name in TIKTOKEN_CACHE_DIR: tiktoken's cache key, SHA-1 of the URL."""
        return hashlib.sha1(self.url.encode()).hexdigest()


ENCODINGS = {
    "o200k_base": EncodingFile(
        _BLOB + "o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "|".join([
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ])),
    "cl100k_base": EncodingFile(
        _BLOB + "cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""),  # noqa: E501
}
"""The encodings batchyard counts with, keyed by tiktoken's names."""

_FAMILIES = (
    (re.compile(r"(chatgpt-4o|gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o\d+)(\b|-|$)"), "o200k_base"),
    (re.compile(r"(gpt-4|gpt-3\.5|gpt-35)(\b|-|$)"), "cl100k_base"),
)


def encoding_for_model(model: str) -> str | None:
    """The tiktoken encoding of an OpenAI model name (a ``provider/`` prefix is ignored);
    None for other families, which are estimated by the heuristic."""
    name = model.rsplit("/", 1)[-1].lower()
    for pattern, encoding in _FAMILIES:
        if pattern.match(name):
            return encoding
    return None


Counter = Callable[[str], int]


class Tokenizer:
    """Counts text with tiktoken encodings read from ``cache_dir``, or by the heuristic.

    Encodings are loaded once, on first use; every refusal to load is logged once.
    """

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir
        self._lock = threading.Lock()
        self._counters: dict[str, Counter | None] = {}

    def counter(self, model: str) -> Counter | None:
        """The exact counter for ``model``, or None where the heuristic applies."""
        encoding = encoding_for_model(model)
        if encoding is None:
            return None
        with self._lock:
            if encoding not in self._counters:
                self._counters[encoding] = self._load(encoding)
            return self._counters[encoding]

    def count(self, text: str, model: str) -> int:
        """Tokens of ``text`` for ``model``: exact with its encoding, else chars/4."""
        exact = self.counter(model)
        return exact(text) if exact else math.ceil(len(text) / CHARS_PER_TOKEN)

    def _load(self, name: str) -> Counter | None:
        spec = ENCODINGS[name]
        fallback = f"estimating {name} models at {CHARS_PER_TOKEN} characters per token"
        try:
            import tiktoken
        except ImportError:
            log.info("tiktoken is not installed (pip install 'batchyard[tokens]'); %s", fallback)
            return None
        if self.cache_dir is None:
            log.info("TIKTOKEN_CACHE_DIR is not set; %s", fallback)
            return None
        path = self.cache_dir / spec.cache_name()
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.warning("no %s encoding file in TIKTOKEN_CACHE_DIR (%s: %s; tokens are never "
                        "downloaded); %s", name, path, exc.strerror or exc, fallback)
            return None
        if hashlib.sha256(data).hexdigest() != spec.sha256:
            log.warning("%s is not the %s encoding file (SHA-256 differs); %s", path, name,
                        fallback)
            return None
        encoding = tiktoken.Encoding(name, pat_str=spec.pattern,
                                     mergeable_ranks=_ranks(data), special_tokens={})
        log.info("counting %s tokens with tiktoken (%s)", name, path)
        return lambda text: len(encoding.encode_ordinary(text))


def _ranks(data: bytes) -> dict[bytes, int]:
    """A ``.tiktoken`` file's mergeable ranks: one ``base64(token) rank`` per line."""
    return {base64.b64decode(token): int(rank)
            for token, rank in (line.split() for line in data.splitlines() if line)}


_tokenizer = Tokenizer()


def set_tokenizer(tokenizer: Tokenizer) -> None:
    """Make ``tokenizer`` the process's default (entry points call it with the settings'
    TIKTOKEN_CACHE_DIR); without it, every estimate is the heuristic."""
    global _tokenizer
    _tokenizer = tokenizer


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


def estimate_tokens(req: ChatRequest, model: str | None = None,
                    tokenizer: Tokenizer | None = None) -> TokenEstimate:
    """The estimate of ``req`` counted as ``model`` (default: the request's model): text,
    tools and schema are counted, media parts are a fixed sum."""
    parts: list[str] = []
    media = 0
    for message in req.messages:
        parts.append(message.text())
        if isinstance(message.content, list):
            media += sum(1 for part in message.content if part.type != "text")
        if message.tool_calls:
            parts.append(json.dumps(message.tool_calls))
    for extra in (req.tools, req.response_format):
        if extra:
            parts.append(json.dumps(extra))
    exact = (tokenizer or _tokenizer).counter(model or req.model)
    text = (sum(exact(part) for part in parts if part) if exact
            else math.ceil(sum(map(len, parts)) / CHARS_PER_TOKEN))
    prompt = text + MESSAGE_OVERHEAD * len(req.messages) + REPLY_PRIMING + MEDIA_TOKENS * media
    return TokenEstimate(prompt=prompt, output=req.output_limit())
