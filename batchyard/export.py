"""Writing a job's results to files or stdout, streamed page by page from the database.

Two formats: ``jsonl``, the OpenAI Batch output lines unchanged (existing tools read them),
and ``csv`` for spreadsheets, one row per request with the reply text, tokens and error.
Either way memory stays bounded: lines are written as the pages arrive.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

from schemas.batch import BatchOutputLine

__all__ = ["CSV_COLUMNS", "FORMATS", "csv_row", "export_results"]

FORMATS = ("jsonl", "csv")
CSV_COLUMNS = ("custom_id", "id", "status_code", "content", "finish_reason", "prompt_tokens",
               "completion_tokens", "error_code", "error_message")


def export_results(producer: Any, job_id: str, output: Path | None, errors: Path | None,
                   order: str, fmt: str = "jsonl") -> tuple[int, int]:
    """Write result lines to ``output`` (stdout if None) and error lines to ``errors`` (or
    with the results); return (result lines, error lines)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    written = [0, 0]
    with ExitStack() as stack:
        out: IO[str] = (stack.enter_context(open(output, "w", newline=""))
                        if output else sys.stdout)
        err: IO[str] = (stack.enter_context(open(errors, "w", newline=""))
                        if errors else out)
        write_out, write_err = _writer(out, fmt), (_writer(err, fmt) if errors else None)
        for line in producer.results(job_id, order=order):
            is_error = line.error is not None
            (write_err if is_error and write_err else write_out)(line)
            written[1 if is_error and errors else 0] += 1
    return written[0], written[1]


def _writer(stream: IO[str], fmt: str) -> Callable[[BatchOutputLine], None]:
    if fmt == "jsonl":
        def write_json(line: BatchOutputLine) -> None:
            stream.write(line.model_dump_json() + "\n")
        return write_json
    table = csv.writer(stream)
    table.writerow(CSV_COLUMNS)

    def write_csv(line: BatchOutputLine) -> None:
        table.writerow(csv_row(line))
    return write_csv


def csv_row(line: BatchOutputLine) -> list[str | int | None]:
    """One spreadsheet row: the first choice's text and finish reason, usage, or the error."""
    if line.error is not None or line.response is None:
        code = line.error.code if line.error else ""
        message = line.error.message if line.error else ""
        return [line.custom_id, line.id, None, None, None, None, None, code, message]
    body = line.response.body
    choice = (body.get("choices") or [{}])[0]
    content = (choice.get("message") or {}).get("content")
    if content is not None and not isinstance(content, str):
        content = json.dumps(content)
    usage = body.get("usage") or {}
    return [line.custom_id, line.id, line.response.status_code, content,
            choice.get("finish_reason"), usage.get("prompt_tokens"),
            usage.get("completion_tokens"), None, None]
