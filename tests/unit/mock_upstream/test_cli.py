from __future__ import annotations

from click.testing import CliRunner

from mock_upstream.cli import command


def test_help_lists_paths_and_directives() -> None:
    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0
    for text in (
        "/v1/chat/completions",
        "/openai/deployments/{deployment}/chat/completions",
        "/v1/messages",
        ":generateContent",
        "/converse",
        "/_mock/stats",
        "[[mock:status=500]]",
        "[[mock:tool_call]]",
        "--rate-limit-rpm",
        "--seed",
    ):
        assert text in result.output


def test_command_name() -> None:
    assert command.name == "mock-upstream"


def test_bad_rate_is_refused_before_serving() -> None:
    result = CliRunner().invoke(command, ["--error-rate", "1.5"])
    assert result.exit_code == 2
    assert "--error-rate" in result.output
