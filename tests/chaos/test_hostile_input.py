"""Hostile or broken input: rejected whole, every bad line named, memory bounded, nothing written.

The big files run through ``submit_probe.py`` in a subprocess, which reports the peak resident
memory the kernel measured for it. "A model the tenant may not use" is the tenants' allow-list:
tests/integration/test_tenants.py covers it (rejected with its line number, nothing left).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from schemas.errors import InputError
from storage.models import JOBS, REQUESTS
from tests.helpers import ROOT
from tests.stack import Stack

PROBE = Path(__file__).with_name("submit_probe.py")
LINE = ('{"custom_id":"r%d","method":"POST","url":"/v1/chat/completions",'
        '"body":{"model":"small","messages":[{"role":"user","content":"question %d"}]}}\n')


def _probe(stack: Stack, path: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(PROBE), str(path)], cwd=ROOT, timeout=300,
                          env={**stack.env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, check=True)
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return report


def _nothing_written(stack: Stack) -> bool:
    with stack.producer.engine.connect() as conn:
        jobs = conn.execute(select(func.count()).select_from(JOBS)).scalar()
        rows = conn.execute(select(func.count()).select_from(REQUESTS)).scalar()
    return bool(jobs == rows == 0)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_2_gb_line_is_rejected_without_being_loaded(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as fh:  # sparse: 2 GiB of NULs inside one string, no disk used
        fh.write(LINE.split("question")[0].encode())
        fh.seek(2 * 1024**3)
        fh.write(b'"}]}}\n' + (LINE % (1, 1)).encode())

    report = _probe(stack, path)

    assert report["lines"] == [1]
    assert "line 1: line longer than 4194304 bytes" in report["error"]
    assert report["peak_mb"] - report["baseline_mb"] < 32
    assert _nothing_written(stack)


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_million_lines_with_one_bad_line_at_the_end_are_rejected_whole(
        stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "million.jsonl"
    with path.open("w") as fh:
        fh.writelines(LINE % (i, i) for i in range(1_000_000))
        fh.write(LINE.replace('{"custom_id":"r%d"', '{"unexpected":1,"custom_id":"r%d"') % (-1, 0))

    report = _probe(stack, path)

    assert report["lines"] == [1_000_001]
    assert "unexpected: unknown field" in report["error"]
    # rows stream into the transaction in batches; what grows is the duplicate check's set
    # of 12-byte custom_id digests (about 90 bytes a line)
    assert report["peak_mb"] - report["baseline_mb"] < 150
    assert _nothing_written(stack)


def _line(**changes: Any) -> bytes:
    line: dict[str, Any] = json.loads(LINE % (0, 0))
    for key, value in changes.items():
        if key.startswith("body_"):
            line["body"][key.removeprefix("body_")] = value
        else:
            line[key] = value
    return json.dumps(line).encode()


_BODY = _line(custom_id="deep").removesuffix(b"}}")
HOSTILE: list[tuple[bytes, str]] = [
    (b"\xff\xfe\x00 not text", "not valid UTF-8"),
    (_BODY + b',"metadata":' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}}",
     "recursion limit exceeded"),
    (_BODY + b',"tools":' + b"[" * 100_000 + b"]" * 100_000 + b"}}", "recursion limit exceeded"),
    (_line(custom_id="a", body_messages="hi"), "body.messages: Input should be a valid array"),
    (_line(custom_id="b", body_max_tokens="ten"), "body.max_tokens: Input should be a valid"),
    (_line(custom_id="c", body_max_tokens=-5), "body.max_tokens: Input should be greater"),
    (_line(custom_id="d", body_max_tokens=10**400), "body.max_tokens: Input should be less"),
    (_line(custom_id="e", extra=1), "extra: unknown field"),
    (_line(custom_id="f", body_logprob=True), "body.logprob: unknown field"),
    (_line(custom_id="g", body_messages=[{"role": "user", "content": "x", "bogus": 1}]),
     "body.messages.0.bogus: unknown field"),
    (b"null", "Input should be an object"),
    (b'"a string"', "Input should be an object"),
    (_line(custom_id="x" * 600), "custom_id: String should have at most 512 characters"),
    (_line(custom_id="h", body_stream=True), "body.stream"),
    (_line(custom_id="i", body_temperature="hot"), "body.temperature"),
    (_line(custom_id="j", body_model=123), "body.model: Input should be a valid string"),
    (_line(custom_id="k", body_model="gpt-9"), "unknown model 'gpt-9'"),
    (_line(custom_id="r0"), "duplicate custom_id 'r0'"),
]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_hostile_line_is_named_and_the_file_is_rejected_whole(
        stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "hostile.jsonl"
    lines = [_line()] + [bad for bad, _ in HOSTILE] + [_line(custom_id="last")]
    path.write_bytes(b"\n".join(lines) + b"\n")

    with pytest.raises(InputError) as info:
        stack.producer.submit(path)

    reasons = {p.line: p.reason for p in info.value.problems}
    assert sorted(reasons) == list(range(2, len(HOSTILE) + 2))
    for number, (_, expected) in enumerate(HOSTILE, start=2):
        assert expected in reasons[number], (number, reasons[number])
    assert _nothing_written(stack)
