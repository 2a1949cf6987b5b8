from __future__ import annotations

import pytest

from mock_upstream.directives import Directive, DirectiveError, extract, parse_directive


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("status=500", Directive(status=500)),
        ("status=429", Directive(status=429, retry_after=1)),
        ("status=429,retry_after=none", Directive(status=429, retry_after=None)),
        (" status = 503 , latency=1500 ", Directive(status=503, latency_ms=1500.0)),
        ("context_length", Directive(context_length=True)),
        ("tool_call,content_filter", Directive(tool_call=True, content_filter=True)),
        ("timeout", Directive(timeout=True)),
        ("reset", Directive(reset=True)),
        ("malformed", Directive(malformed=True)),
        ("error_body", Directive(error_body=True)),
        ("overloaded", Directive(overloaded=True)),
        ("", Directive()),
    ],
)
def test_parse_directive(spec: str, expected: Directive) -> None:
    assert parse_directive(spec) == expected


@pytest.mark.parametrize(
    "spec",
    ["explode", "status", "status=abc", "status=200", "status=600", "timeout=1", "latency=x"],
)
def test_bad_directives_are_refused(spec: str) -> None:
    with pytest.raises(DirectiveError):
        parse_directive(spec)


def test_extract_finds_and_strips_markers() -> None:
    directive, text = extract("Hi [[mock:status=500]] there [[mock:latency=10]]", None)
    assert directive == Directive(status=500, latency_ms=10.0)
    assert text.split() == ["Hi", "there"]


def test_extract_header_wins_over_text() -> None:
    directive, _ = extract("[[mock:status=500]]", "status=503")
    assert directive == Directive(status=503)


def test_extract_without_directive() -> None:
    assert extract("plain [[not a directive]]", None) == (None, "plain [[not a directive]]")
    assert extract("plain", "") == (None, "plain")
