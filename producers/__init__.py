"""The producer side: validate input, store a job, publish it, follow it, read its results."""

from __future__ import annotations

from producers.client import Producer, new_job_id
from producers.parse import InputReader

__all__ = ["InputReader", "Producer", "new_job_id"]
