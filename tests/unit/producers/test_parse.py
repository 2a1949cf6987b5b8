"""The input reader: every bad line reported with its number, bounded memory on huge lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producers.parse import InputReader, ModelAccess
from schemas.errors import InputError

GOOD = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}


def _reader(**kw: object) -> InputReader:
    return InputReader({"m"}, max_line_bytes=int(kw.get("max_line_bytes", 4096)),  # type: ignore[call-overload]
                       max_problems=int(kw.get("max_problems", 100)),  # type: ignore[call-overload]
                       default_model=kw.get("default_model"))  # type: ignore[arg-type]


def _read(tmp_path: Path, data: bytes, **kw: object
          ) -> tuple[list[tuple[str, str, str]], InputReader]:
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    reader = _reader(**kw)
    return list(reader.rows(path)), reader


def test_a_valid_file_yields_compact_bodies(tmp_path: Path) -> None:
    rows, reader = _read(tmp_path, (json.dumps(GOOD) + "\n\n").encode())
    reader.check()
    assert rows == [("a", "m", '{"model":"m","messages":[{"role":"user","content":"hi"}]}')]


@pytest.mark.parametrize(("line", "reason"), [
    (b"\xff\xfe", "not valid UTF-8"),
    (b"[" * 5000 + b"]" * 5000, "bad JSON"),
    (json.dumps({**GOOD, "extra": 1}).encode(), "extra: unknown field"),
    (json.dumps({**GOOD, "body": {**GOOD["body"], "max_tokens": -5}}).encode(),
     "body.max_tokens"),
    (json.dumps({**GOOD, "body": {**GOOD["body"], "max_tokens": 10**12}}).encode(),
     "body.max_tokens"),
    (json.dumps({**GOOD, "body": {**GOOD["body"], "temperature": "hot"}}).encode(),
     "body.temperature"),
    (json.dumps({**GOOD, "method": "GET"}).encode(), "method"),
    (json.dumps([1, 2]).encode(), "Input should be an object"),
])
def test_each_kind_of_bad_line_is_named(tmp_path: Path, line: bytes, reason: str) -> None:
    data = json.dumps({**GOOD, "custom_id": "ok"}).encode() + b"\n" + line + b"\n"
    _rows, reader = _read(tmp_path, data, max_line_bytes=1 << 20)
    with pytest.raises(InputError) as info:
        reader.check()
    assert [p.line for p in info.value.problems] == [2]
    assert reason in info.value.problems[0].reason


def test_a_line_over_the_limit_is_skipped_without_loading_it(tmp_path: Path) -> None:
    huge = json.dumps({**GOOD, "custom_id": "x" * 50_000}).encode()
    data = huge + b"\n" + json.dumps(GOOD).encode() + b"\n"
    rows, reader = _read(tmp_path, data, max_line_bytes=1024)
    assert [r[0] for r in rows] == ["a"]
    assert [(p.line, p.reason) for p in reader.problems] == [(1, "line longer than 1024 bytes")]


def test_problems_beyond_the_limit_are_counted_not_listed(tmp_path: Path) -> None:
    _, reader = _read(tmp_path, b"{\n" * 10, max_problems=3)
    with pytest.raises(InputError) as info:
        reader.check()
    assert len(info.value.problems) == 3 and info.value.truncated
    assert reader.problem_count == 10


def test_plain_prompts_need_a_model() -> None:
    with pytest.raises(InputError, match="need a model"):
        list(_reader().rows(["hello"]))


def test_an_empty_input_is_rejected() -> None:
    reader = _reader()
    list(reader.rows([]))
    with pytest.raises(InputError, match="no requests"):
        reader.check()


def test_a_model_off_the_allow_list_is_not_allowed_and_one_off_the_catalog_unknown() -> None:
    access = ModelAccess({"mini", "gpt-4o-mini"}, {"mini", "gpt-4o-mini", "large"},
                         "tenant 'acme'")
    reader = InputReader(access, default_model=None, max_line_bytes=4096, max_problems=10)

    rows = list(reader.rows([{"model": m, "messages": [{"role": "user", "content": "x"}]}
                             for m in ("mini", "large", "nope")]))

    assert [model for _, model, _ in rows] == ["mini"]
    assert [str(p) for p in reader.problems] == [
        "line 2: model 'large' is not allowed for tenant 'acme' (allowed: gpt-4o-mini, mini)",
        "line 3: unknown model 'nope'"]


def test_a_long_allow_list_is_shown_in_part() -> None:
    allowed = {f"m{i:02}" for i in range(25)}
    access = ModelAccess(allowed, allowed | {"big"}, "tenant 't'")

    refusal = access.refusal("big") or ""

    assert refusal.endswith("m18, m19 and 5 more)") and "m20" not in refusal
    assert access.refusal("m03") is None


def test_lists_of_prompts_dicts_and_lines_are_accepted() -> None:
    reader = _reader(default_model="m")
    rows = list(reader.rows(["hi", {"messages": [{"role": "user", "content": "yo"}]}, GOOD]))
    reader.check()
    assert [r[0] for r in rows] == ["request-1", "request-2", "a"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=80),
    st.just(json.dumps(GOOD).encode()),
    st.builds(lambda cid: json.dumps({**GOOD, "custom_id": cid}).encode(),
              st.text(min_size=0, max_size=8)),
), max_size=12))
def test_any_input_is_accepted_whole_or_rejected_with_line_numbers(lines: list[bytes]) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".jsonl") as fh:
        fh.write(b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n")
        fh.flush()
        reader = _reader()
        rows = list(reader.rows(fh.name))
        try:
            reader.check()
        except InputError as exc:
            assert exc.problems
            assert all(0 <= p.line <= len(lines) for p in exc.problems)
            return
    assert len(rows) == sum(1 for line in lines if line.strip())
    assert len({r[0] for r in rows}) == len(rows)
