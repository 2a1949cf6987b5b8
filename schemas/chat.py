"""The unified chat request and result: the OpenAI chat completions body, typed.

Every provider adapter translates from ``ChatRequest`` and back to ``ChatResult``. Unknown
fields are rejected so a typo never reaches an upstream silently.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "MAX_TOKENS_LIMIT",
    "ChatMessage",
    "ChatRequest",
    "ChatResult",
    "ContentPart",
    "Usage",
]

MAX_TOKENS_LIMIT = 1_000_000
"""No model in the catalog of any provider produces more; a larger value is a mistake."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContentPart(_Strict):
    """One part of a multi-part message: text or an image."""

    type: Literal["text", "image_url", "input_audio", "file"]
    text: str | None = None
    image_url: dict[str, Any] | None = None
    input_audio: dict[str, Any] | None = None
    file: dict[str, Any] | None = None


class ChatMessage(_Strict):
    """A message in the OpenAI chat format."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None

    def text(self) -> str:
        """The message's text, parts joined; images and audio contribute nothing."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "".join(p.text or "" for p in self.content if p.type == "text")


_Tokens = Annotated[int, Field(ge=1, le=MAX_TOKENS_LIMIT)]


class ChatRequest(_Strict):
    """A chat completions request body (OpenAI format); ``model`` is our public model name."""

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: _Tokens | None = None
    max_completion_tokens: _Tokens | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1, le=1)] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: dict[str, int] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    stream: Literal[False] | None = None

    @model_validator(mode="after")
    def _one_token_limit(self) -> ChatRequest:
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("give max_tokens or max_completion_tokens, not both")
        return self

    def output_limit(self) -> int | None:
        """The requested output token limit, whichever field carried it."""
        return self.max_completion_tokens or self.max_tokens

    def prompt_text(self) -> str:
        """All message text, for token estimates."""
        return "\n".join(m.text() for m in self.messages)


class Usage(BaseModel):
    """Token counts as the provider reported them, normalised."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ChatResult(BaseModel):
    """A successful upstream answer: the OpenAI ``chat.completion`` body plus what we record."""

    body: dict[str, Any]
    usage: Usage
    request_id: str = ""
    status_code: int = 200
    text: str | None = None
    """``body`` as the upstream sent it, when ``body`` is that JSON object unchanged (an
    OpenAI-compatible answer): stored as it came instead of serialising ``body`` again."""
