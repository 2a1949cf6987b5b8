"""Reading a job's input: OpenAI Batch JSONL files, lists of chat requests, or plain prompts.

Validation streams: each line is checked as it is read, memory stays bounded whatever the file
size (a line longer than the limit is skipped over, not loaded), and every problem is collected
with its line number. The caller inserts rows while reading and rolls back when any was bad.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ValidationError

from schemas.batch import BatchInputLine
from schemas.chat import ChatRequest
from schemas.errors import InputError, InputProblem

__all__ = ["InputReader", "ModelAccess", "Source"]

Source = str | Path | Iterable[str | dict[str, Any] | BaseModel]
_READ_CHUNK = 1 << 20
_LISTED = 20
"""Allowed model names shown at most in a refusal."""


@dataclass(frozen=True)
class ModelAccess:
    """The model names a job may use (``allowed``) out of the catalog's (``known``): a name
    outside the catalog is "unknown", one the ``owner``'s allow-list leaves out is "not
    allowed" (with the names that are)."""

    allowed: AbstractSet[str]
    known: AbstractSet[str]
    owner: str = "this caller"
    """Whose allow-list it is, e.g. "tenant 'acme'"."""

    def refusal(self, model: str) -> str | None:
        """Why ``model`` may not be used, or None if it may."""
        if model in self.allowed:
            return None
        if model not in self.known:
            return f"unknown model {model!r}"
        names = sorted(self.allowed)
        listed = ", ".join(names[:_LISTED]) or "none"
        more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
        return f"model {model!r} is not allowed for {self.owner} (allowed: {listed}{more})"


class InputReader:
    """Yields (custom_id, model, body JSON) rows from a source, collecting problems."""

    def __init__(self, models: AbstractSet[str] | ModelAccess, *,
                 default_model: str | None = None, max_line_bytes: int,
                 max_problems: int) -> None:
        self._models = (models if isinstance(models, ModelAccess)
                        else ModelAccess(models, models))
        self._default_model = default_model
        self._max_line = max_line_bytes
        self._max_problems = max_problems
        self._seen: set[bytes] = set()
        self.problems: list[InputProblem] = []
        self.problem_count = 0
        self.lines = 0

    def rows(self, source: Source) -> Iterator[tuple[str, str, str]]:
        """Every valid row; bad lines are recorded in ``problems`` and skipped."""
        if isinstance(source, str | Path):
            with open(source, "rb") as fh:
                yield from self._file_rows(fh)
        else:
            for number, item in enumerate(source, start=1):
                self.lines = number
                line = self._item_line(number, item)
                if line is not None:
                    yield from self._accept(number, line)
        if not self._seen and not self.problem_count:  # nothing but blank lines, or nothing
            self._problem(0, "the input holds no requests")

    def check(self) -> None:
        """Raise InputError naming every problem found (up to the limit)."""
        if self.problem_count:
            truncated = self.problem_count > len(self.problems)
            raise InputError(self.problems, truncated=truncated)

    def _file_rows(self, fh: IO[bytes]) -> Iterator[tuple[str, str, str]]:
        number = 0
        while True:
            raw = fh.readline(self._max_line + 1)
            if not raw:
                return
            number += 1
            self.lines = number
            if len(raw) > self._max_line and not raw.endswith(b"\n"):
                self._skip_rest_of_line(fh)
                self._problem(number, f"line longer than {self._max_line} bytes")
                continue
            if not raw.strip():
                continue
            line = self._parse_json_line(number, raw)
            if line is not None:
                yield from self._accept(number, line)

    @staticmethod
    def _skip_rest_of_line(fh: IO[bytes]) -> None:
        while True:
            chunk = fh.readline(_READ_CHUNK)
            if not chunk or chunk.endswith(b"\n"):
                return

    def _parse_json_line(self, number: int, raw: bytes) -> BatchInputLine | None:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._problem(number, f"not valid UTF-8 (byte {exc.start})")
            return None
        try:
            return BatchInputLine.model_validate_json(raw)
        except ValidationError as exc:
            self._problem(number, _first_errors(exc))
            return None

    def _item_line(self, number: int, item: Any) -> BatchInputLine | None:
        try:
            if isinstance(item, BatchInputLine):
                return item
            if isinstance(item, str):
                body = ChatRequest(model=self._require_model(),
                                   messages=[{"role": "user", "content": item}])
            elif isinstance(item, ChatRequest):
                body = item
            elif isinstance(item, dict) and "custom_id" in item:
                return BatchInputLine.model_validate(item)
            elif isinstance(item, dict):
                body = ChatRequest.model_validate(
                    {"model": self._default_model, **item} if self._default_model else item)
            else:
                self._problem(number, f"unsupported item type {type(item).__name__}")
                return None
        except ValidationError as exc:
            self._problem(number, _first_errors(exc))
            return None
        return BatchInputLine(custom_id=f"request-{number}", method="POST",
                              url="/v1/chat/completions", body=body)

    def _require_model(self) -> str:
        if not self._default_model:
            raise InputError([InputProblem(0, "plain prompts need a model (model=...)")])
        return self._default_model

    def _accept(self, number: int, line: BatchInputLine) -> Iterator[tuple[str, str, str]]:
        key = hashlib.blake2b(line.custom_id.encode(), digest_size=12).digest()
        if key in self._seen:
            self._problem(number, f"duplicate custom_id {line.custom_id!r}")
            return
        self._seen.add(key)
        refused = self._models.refusal(line.body.model)
        if refused is not None:
            self._problem(number, refused)
            return
        body = line.body.model_dump_json(exclude_none=True)
        yield line.custom_id, line.body.model, body

    def _problem(self, number: int, reason: str) -> None:
        self.problem_count += 1
        if len(self.problems) < self._max_problems:
            self.problems.append(InputProblem(number, reason))


def _first_errors(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "json_invalid":
            parts.append(f"bad JSON: {err.get('ctx', {}).get('error', msg)}")
        elif err["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown field")
        elif err["type"] == "missing":
            parts.append(f"{where}: missing field")
        else:
            parts.append(f"{where}: {msg}" if where else msg)
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")

