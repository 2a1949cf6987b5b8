"""Property: any input given to ``Producer.submit`` is accepted whole or rejected whole.

Accepted: one job holding exactly the input's requests, in order. Rejected: an InputError
naming at least one line, and the database exactly as it was. Nothing else may happen (no
crash, no half-stored job), whatever the bytes or objects handed in.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from producers import Producer
from schemas.errors import InputError
from schemas.jobs import JobStatus
from storage.models import JOBS, REQUESTS
from tests.stack import make_stack

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=8,
)
_fields = st.sampled_from(["custom_id", "method", "url", "body", "extra"])
_body_fields = st.sampled_from(["model", "messages", "max_tokens", "temperature", "stream",
                                "n", "seed", "tools", "unknown"])


@st.composite
def _request(draw: st.DrawFn) -> dict[str, Any]:
    """A valid line, sometimes with one field broken."""
    line: dict[str, Any] = {
        "custom_id": draw(st.sampled_from(["a", "b", "c", "d", "e"]) | st.text(max_size=6)),
        "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": draw(st.sampled_from(["small", "large", "small-alias", "nope"])),
                 "messages": [{"role": "user", "content": draw(st.text(max_size=20))}]},
    }
    if draw(st.booleans()):
        line["body"]["max_tokens"] = draw(st.integers(min_value=-5, max_value=2_000_000))
    if draw(st.integers(0, 3)) == 0:
        line["body"][draw(_body_fields)] = draw(_json)
    if draw(st.integers(0, 3)) == 0:
        line[draw(_fields)] = draw(_json)
    return line


_item = _request() | _json.map(lambda v: v if isinstance(v, dict) else {"value": v})
_raw = (_request().map(lambda d: json.dumps(d).encode()) | st.binary(max_size=40)
        | _json.map(lambda v: json.dumps(v).encode()) | st.just(b""))


@st.composite
def _file_lines(draw: st.DrawFn) -> list[bytes]:
    """Mostly good lines (distinct ids, known models), now and then a broken or random one."""
    lines = []
    for n in range(draw(st.integers(0, 8))):
        if draw(st.integers(0, 4)):
            text = draw(st.text(max_size=20))
            lines.append(json.dumps({
                "custom_id": f"id-{n}", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "small", "messages": [{"role": "user", "content": text}]},
            }).encode())
        else:
            lines.append(draw(_raw))
    return lines


@st.composite
def _list_items(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Chat bodies and batch lines, mostly good, now and then a broken one."""
    items: list[dict[str, Any]] = []
    for n in range(draw(st.integers(0, 8))):
        body = {"model": "small", "messages": [{"role": "user", "content": f"q{n}"}]}
        kind = draw(st.integers(0, 5))
        if kind == 0:
            items.append(draw(_item))
        elif kind == 1:
            items.append({"custom_id": f"id-{n}", "method": "POST",
                          "url": "/v1/chat/completions", "body": body})
        else:
            items.append(body)
    return items


@pytest.fixture
def producer(tmp_path: Path, sqlite_url: str, redis_url: str) -> Iterator[Producer]:
    stack = make_stack(tmp_path, sqlite_url, redis_url, "http://127.0.0.1:9")
    p: Producer = stack.producer
    yield p
    stack.close()


def _counts(producer: Producer) -> tuple[int, int]:
    with producer.engine.connect() as conn:
        jobs = conn.execute(select(func.count()).select_from(JOBS)).scalar_one()
        rows = conn.execute(select(func.count()).select_from(REQUESTS)).scalar_one()
    return int(jobs), int(rows)


def _check(producer: Producer, source: Any, custom_ids: list[str] | None, size: int) -> None:
    before = _counts(producer)
    try:
        job = producer.submit(source)
    except InputError as exc:
        event("rejected")
        assert exc.problems and all(0 <= p.line <= size for p in exc.problems)
        assert str(exc).startswith("input rejected")
        assert _counts(producer) == before  # rejected whole: nothing written
        return
    event("accepted")
    assert job.status is JobStatus.IN_PROGRESS
    with producer.engine.connect() as conn:
        stored = list(conn.execute(select(REQUESTS.c.custom_id).where(
            REQUESTS.c.job_id == job.id).order_by(REQUESTS.c.seq)).scalars())
    assert job.total == len(stored) > 0
    if custom_ids is not None:
        assert stored == custom_ids  # accepted whole: every request, in order
    assert _counts(producer) == (before[0] + 1, before[1] + len(stored))


_SETTINGS = settings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])


@_SETTINGS
@given(_file_lines())
def test_any_file_is_accepted_whole_or_rejected_whole(producer: Producer, lines: list[bytes]
                                                      ) -> None:
    lines = [line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines]
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as fh:
        fh.write(b"\n".join(lines) + b"\n")
        fh.flush()
        ids = [json.loads(line)["custom_id"] for line in lines if line.strip()
               if _is_request(line)]
        complete = len(ids) == sum(1 for line in lines if line.strip())
        _check(producer, fh.name, ids if complete else None, len(lines))


@_SETTINGS
@given(_list_items())
def test_any_list_is_accepted_whole_or_rejected_whole(producer: Producer,
                                                      items: list[dict[str, Any]]) -> None:
    _check(producer, items, None, len(items))


def _is_request(line: bytes) -> bool:
    try:
        value = json.loads(line)
    except ValueError:
        return False
    return isinstance(value, dict) and isinstance(value.get("custom_id"), str)
