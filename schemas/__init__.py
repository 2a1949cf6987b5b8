"""Data shapes shared by every package: pydantic models, enums, names. Imports nothing of ours."""

from __future__ import annotations

from schemas.batch import BatchError, BatchInputLine, BatchOutputLine, BatchResponse
from schemas.catalog import Catalog, Deployment, ModelGroup, Pricing
from schemas.chat import ChatMessage, ChatRequest, ChatResult, Usage
from schemas.jobs import ChunkMessage, JobStatus, JobView, RequestState
from schemas.keys import Tier, queue_name
from schemas.settings import Settings

__all__ = [
    "BatchError",
    "BatchInputLine",
    "BatchOutputLine",
    "BatchResponse",
    "Catalog",
    "ChatMessage",
    "ChatRequest",
    "ChatResult",
    "ChunkMessage",
    "Deployment",
    "JobStatus",
    "JobView",
    "ModelGroup",
    "Pricing",
    "RequestState",
    "Settings",
    "Tier",
    "Usage",
    "queue_name",
]
