"""Writing a job's results to files or stdout, one JSON line each, streamed."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

__all__ = ["export_results"]


def export_results(producer: Any, job_id: str, output: Path | None, errors: Path | None,
                   order: str) -> tuple[int, int]:
    """Write result lines to ``output`` (stdout if None) and error lines to ``errors`` (or
    with the results); return (result lines, error lines)."""
    written = [0, 0]
    with ExitStack() as stack:
        out: IO[str] = stack.enter_context(open(output, "w")) if output else sys.stdout
        err: IO[str] = stack.enter_context(open(errors, "w")) if errors else out
        for line in producer.results(job_id, order=order):
            is_error = line.error is not None
            (err if is_error else out).write(line.model_dump_json() + "\n")
            written[1 if is_error and errors else 0] += 1
    return written[0], written[1]
