from __future__ import annotations

import pytest

from mock_upstream.text import Finish, PromptCount, count_tokens, make_reply


@pytest.mark.parametrize(
    ("text", "tokens"), [("", 1), ("a", 1), ("abcd", 1), ("abcde", 2), ("x" * 40, 10)]
)
def test_count_tokens(text: str, tokens: int) -> None:
    assert count_tokens(text) == tokens


def test_prompt_count() -> None:
    prompt = PromptCount()
    prompt.message()
    prompt.text("abcdefgh")
    prompt.image()
    assert prompt.tokens == 1 + 2 + 85


def test_reply_quotes_the_user() -> None:
    reply = make_reply("What is  the\ncapital of France?", None)
    assert reply.text == "Mock reply: What is the capital of France?"
    assert (reply.completion_tokens, reply.finish) == (count_tokens(reply.text), Finish.STOP)


def test_reply_is_cut_to_max_tokens() -> None:
    reply = make_reply("one two three four five", 2)
    assert (reply.text, reply.completion_tokens, reply.finish) == ("Mock rep", 2, Finish.LENGTH)
    assert make_reply("hi", 100).finish is Finish.STOP
    exact = make_reply("hi", count_tokens("Mock reply: hi"))
    assert exact.finish is Finish.STOP


def test_tool_call_and_filtered_replies() -> None:
    tool = make_reply("hi", None, tool_name="lookup")
    assert (tool.text, tool.tool_name, tool.finish) == ("", "lookup", Finish.TOOL_CALL)
    filtered = make_reply("hi", None, filtered=True)
    assert (filtered.text, filtered.completion_tokens, filtered.finish) == (
        "",
        0,
        Finish.CONTENT_FILTER,
    )
