"""OpenAI Batch API lines: what a job file holds and what the results file holds."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.chat import ChatRequest

__all__ = [
    "CHAT_COMPLETIONS_URL",
    "BatchError",
    "BatchInputLine",
    "BatchOutputLine",
    "BatchResponse",
]

CHAT_COMPLETIONS_URL = "/v1/chat/completions"


class BatchInputLine(BaseModel):
    """One line of an OpenAI Batch input file."""

    model_config = ConfigDict(extra="forbid")

    custom_id: str = Field(min_length=1, max_length=512)
    method: Literal["POST"]
    url: Literal["/v1/chat/completions"]
    body: ChatRequest


class BatchResponse(BaseModel):
    """The ``response`` member of an output line."""

    status_code: int
    request_id: str
    body: dict[str, Any]


class BatchError(BaseModel):
    """The ``error`` member of an output line (OpenAI batch error form)."""

    code: str
    message: str


class BatchOutputLine(BaseModel):
    """One line of an OpenAI Batch output (or error) file."""

    id: str
    custom_id: str
    response: BatchResponse | None = None
    error: BatchError | None = None
