"""Each wire format's bodies, statuses and headers, as a client of that provider sees them."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.unit.mock_upstream.wire import ANTHROPIC, AZURE, BEDROCK, GEMINI, OPENAI, WIRES, Wire

PROMPT = "Hello there"
# system "Be brief." (3) + user "Hello there" (3) + one per message (2)
PROMPT_TOKENS = 8
REPLY = "Mock reply: Hello there"
REPLY_TOKENS = 6

FINISH = {
    # wire: (stop, length, tool call, content filter)
    "openai": ("stop", "length", "tool_calls", "content_filter"),
    "azure": ("stop", "length", "tool_calls", "content_filter"),
    "anthropic": ("end_turn", "max_tokens", "tool_use", "refusal"),
    "gemini": ("STOP", "MAX_TOKENS", "STOP", "SAFETY"),
    "bedrock": ("end_turn", "max_tokens", "tool_use", "content_filtered"),
}
ERROR_TYPES = {
    # wire: {status: error type as the provider names it}
    "openai": {
        400: "invalid_request_error",
        401: "invalid_request_error",
        429: "requests",
        500: "server_error",
        503: "server_error",
    },
    "anthropic": {
        400: "invalid_request_error",
        401: "authentication_error",
        429: "rate_limit_error",
        500: "api_error",
        529: "overloaded_error",
    },
    "gemini": {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        503: "UNAVAILABLE",
    },
    "bedrock": {
        400: "ValidationException",
        403: "AccessDeniedException",
        429: "ThrottlingException",
        500: "InternalServerException",
        503: "ServiceUnavailableException",
        408: "ModelTimeoutException",
    },
}
ERROR_TYPES["azure"] = ERROR_TYPES["openai"]
OVERLOADED_STATUS = {"openai": 503, "azure": 503, "anthropic": 529, "gemini": 503, "bedrock": 503}
REQUEST_ID = {
    "openai": "x-request-id",
    "azure": "x-request-id",
    "anthropic": "request-id",
    "bedrock": "x-amzn-RequestId",
}
CONTEXT_MESSAGE = {
    "openai": r"maximum context length is \d+ tokens\. However, your messages resulted in \d+",
    "azure": r"maximum context length is \d+ tokens",
    "anthropic": r"^prompt is too long: \d+ tokens > \d+ maximum$",
    "gemini": r"^The input token count \(\d+\) exceeds the maximum number of tokens allowed",
    "bedrock": r"^Input is too long for requested model\.$",
}
by_name = pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.name)


def _error_message(wire: Wire, response: httpx.Response) -> str:
    body = response.json()
    return str(body["message"] if wire is BEDROCK else body["error"]["message"])


@by_name
def test_success_reply_usage_and_finish(client: httpx.Client, wire: Wire) -> None:
    response = wire.post(client, PROMPT)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert wire.text(body) == REPLY
    assert wire.finish(body) == FINISH[wire.name][0]
    assert wire.usage(body) == (PROMPT_TOKENS, REPLY_TOKENS)
    if wire.name in REQUEST_ID:
        assert response.headers[REQUEST_ID[wire.name]]


@by_name
def test_small_max_tokens_truncates_with_length_finish(client: httpx.Client, wire: Wire) -> None:
    body = wire.post(client, PROMPT, max_tokens=3).json()
    assert wire.finish(body) == FINISH[wire.name][1]
    assert wire.text(body) == REPLY[:12]
    assert wire.usage(body) == (PROMPT_TOKENS, 3)


def test_reply_quotes_only_the_first_twelve_words(client: httpx.Client) -> None:
    words = [f"w{i}" for i in range(30)]
    body = OPENAI.post(client, " ".join(words)).json()
    assert OPENAI.text(body) == "Mock reply: " + " ".join(words[:12])


@by_name
def test_tool_call_directive_calls_the_first_tool(client: httpx.Client, wire: Wire) -> None:
    body = wire.post(client, "weather? [[mock:tool_call]]", tool="get_weather").json()
    assert wire.tool_call(body) == ("get_weather", {})
    assert wire.finish(body) == FINISH[wire.name][2]


@by_name
def test_content_filter_directive(client: httpx.Client, wire: Wire) -> None:
    response = wire.post(client, "something bad [[mock:content_filter]]")
    assert response.status_code == 200
    body = response.json()
    assert wire.finish(body) == FINISH[wire.name][3]
    assert not wire.text(body)


def test_gemini_content_filter_reports_safety_ratings(client: httpx.Client) -> None:
    body = GEMINI.post(client, "something bad [[mock:content_filter]]").json()
    ratings = body["candidates"][0]["safetyRatings"]
    assert any(rating.get("blocked") and rating["probability"] == "HIGH" for rating in ratings)
    assert "safetyRatings" in body["promptFeedback"]


@by_name
@pytest.mark.parametrize("status", [400, 401, 403, 408, 429, 500, 503, 529])
def test_status_directive_answers_in_the_provider_error_format(
    client: httpx.Client, wire: Wire, status: int
) -> None:
    response = wire.post(client, f"fail please [[mock:status={status}]]")
    assert response.status_code == status
    error_type = wire.error_type(response)
    if status in ERROR_TYPES[wire.name]:
        assert error_type == ERROR_TYPES[wire.name][status]
    assert _error_message(wire, response)
    assert ("retry-after" in response.headers) == (status == 429)


def test_openai_rate_limit_error_code(client: httpx.Client) -> None:
    error = OPENAI.post(client, "[[mock:status=429]]").json()["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert set(error) == {"message", "type", "param", "code"}


@by_name
def test_overloaded_directive_uses_the_provider_status(client: httpx.Client, wire: Wire) -> None:
    response = wire.post(client, "[[mock:overloaded]]")
    assert response.status_code == OVERLOADED_STATUS[wire.name]
    assert wire.error_type(response) == ERROR_TYPES[wire.name][response.status_code]


@by_name
def test_context_length_directive(client: httpx.Client, wire: Wire) -> None:
    response = wire.post(client, "long story [[mock:context_length]]")
    assert response.status_code == 400
    assert wire.error_type(response) == ERROR_TYPES[wire.name][400]
    assert re.search(CONTEXT_MESSAGE[wire.name], _error_message(wire, response))
    if wire in (OPENAI, AZURE):
        assert response.json()["error"]["code"] == "context_length_exceeded"


def test_a_prompt_over_the_context_window_is_refused(client: httpx.Client) -> None:
    response = ANTHROPIC.post(client, "x" * 4 * 200_001)
    assert response.status_code == 400
    assert _error_message(ANTHROPIC, response) == (
        "prompt is too long: 200006 tokens > 200000 maximum"  # 200001 + 3 + 2 messages
    )


@pytest.mark.parametrize(
    ("wire", "status", "error_type"),
    [
        (OPENAI, 401, "invalid_request_error"),
        (AZURE, 401, "invalid_request_error"),
        (ANTHROPIC, 401, "authentication_error"),
        (GEMINI, 403, "PERMISSION_DENIED"),
        (BEDROCK, 403, "MissingAuthenticationTokenException"),
    ],
    ids=lambda value: getattr(value, "name", str(value)),
)
def test_missing_credentials(
    client: httpx.Client, wire: Wire, status: int, error_type: str
) -> None:
    body = wire.body(wire.model, PROMPT, None, None)
    response = client.post(wire.path(wire.model), json=body)
    assert response.status_code == status
    assert wire.error_type(response) == error_type


def test_openai_missing_key_has_the_invalid_api_key_code(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_gemini_accepts_the_key_as_a_query_parameter(client: httpx.Client) -> None:
    body = GEMINI.body("gemini-2.0-flash", PROMPT, None, None)
    response = client.post("/v1beta/models/gemini-2.0-flash:generateContent?key=k", json=body)
    assert response.status_code == 200
    assert response.json()["modelVersion"] == "gemini-2.0-flash"


def test_anthropic_requires_the_version_header(client: httpx.Client) -> None:
    response = ANTHROPIC.post(client, PROMPT, headers={"anthropic-version": ""})
    assert response.status_code == 400
    assert "anthropic-version" in _error_message(ANTHROPIC, response)


def test_anthropic_requires_max_tokens(client: httpx.Client) -> None:
    body = {"model": "claude", "messages": [{"role": "user", "content": "hi"}]}
    response = client.post("/v1/messages", json=body, headers=ANTHROPIC.headers)
    assert response.status_code == 400
    assert ANTHROPIC.error_type(response) == "invalid_request_error"
    assert _error_message(ANTHROPIC, response) == "max_tokens: Field required"


def test_azure_requires_an_api_version(client: httpx.Client) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}]}
    response = client.post(
        "/openai/deployments/d/chat/completions", json=body, headers=AZURE.headers
    )
    assert response.status_code == 404


@by_name
def test_invalid_json_is_a_400_in_the_provider_format(client: httpx.Client, wire: Wire) -> None:
    response = client.post(wire.path(wire.model), content=b'{"model": ', headers=wire.headers)
    assert response.status_code == 400
    assert wire.error_type(response) == ERROR_TYPES[wire.name][400]


@by_name
def test_missing_messages_is_a_400(client: httpx.Client, wire: Wire) -> None:
    body = {"model": wire.model, "max_tokens": 10}
    response = client.post(wire.path(wire.model), json=body, headers=wire.headers)
    assert response.status_code == 400
    assert wire.error_type(response) == ERROR_TYPES[wire.name][400]


def test_bedrock_model_id_may_be_an_encoded_arn(client: httpx.Client) -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-v1:0"
    response = BEDROCK.post(client, PROMPT, model=arn)
    assert response.status_code == 200
    assert BEDROCK.text(response.json()) == REPLY


def test_image_parts_count_85_tokens(client: httpx.Client) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    text = {"type": "text", "text": "Hello there"}
    body = {"model": "m", "messages": [{"role": "user", "content": [text, image]}]}
    response = client.post("/v1/chat/completions", json=body, headers=OPENAI.headers)
    assert OPENAI.usage(response.json())[0] == 3 + 85 + 1
    assert OPENAI.text(response.json()) == REPLY


def test_openai_body_shape(client: httpx.Client) -> None:
    body = OPENAI.post(client, PROMPT).json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["system_fingerprint"] == "fp_mock"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["logprobs"] is None
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0


def test_anthropic_body_shape(client: httpx.Client) -> None:
    body = ANTHROPIC.post(client, PROMPT).json()
    assert body["id"].startswith("msg_")
    assert (body["type"], body["role"], body["stop_sequence"]) == ("message", "assistant", None)
    assert body["usage"]["cache_read_input_tokens"] == 0
    assert body["usage"]["cache_creation_input_tokens"] == 0


def test_embeddings(client: httpx.Client) -> None:
    body = {"model": "text-embedding-3-small", "input": ["alpha", "beta", "alpha"]}
    response = client.post("/v1/embeddings", json=body, headers=OPENAI.headers)
    assert response.status_code == 200
    data = response.json()
    vectors = [item["embedding"] for item in data["data"]]
    assert [item["index"] for item in data["data"]] == [0, 1, 2]
    assert all(len(vector) == 8 for vector in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert data["usage"] == {"prompt_tokens": 5, "total_tokens": 5}  # 2 + 1 + 2
