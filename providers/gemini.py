"""Google Gemini ``generateContent`` (``POST {base_url}/models/{model}:generateContent``, base_url
like https://generativelanguage.googleapis.com/v1beta, key in ``x-goog-api-key``).

Messages become ``contents`` (assistant → role ``model``), system and developer messages the
``systemInstruction``; sampling settings go to ``generationConfig``. Schemas (tool parameters,
``response_format``) are sent unchanged as JSON Schema through ``parametersJsonSchema`` and
``responseJsonSchema``, which accept what OpenAI schemas use (``additionalProperties`` included),
unlike the OpenAPI-subset ``parameters`` / ``responseSchema``.
"""

from __future__ import annotations

import json
import mimetypes
import re
from typing import Any

import httpx

from providers.completion import Completion, created_at, finish_reason, openai_tool_call, read_json
from providers.errors import error_for_status, upstream_error
from providers.params import ParamSupport
from providers.translate import (
    function_tools,
    image_of,
    merge_turns,
    output_format,
    parsed_tool_calls,
    plain_text,
    stop_list,
    system_texts,
    tool_choice,
    tool_names,
    unsupported_part,
)
from schemas.catalog import Deployment
from schemas.chat import ChatMessage, ChatRequest, ChatResult, Usage
from schemas.errors import (
    AuthenticationError,
    BadRequestError,
    ContentFilteredError,
    ContextLengthError,
    MalformedResponseError,
    OverloadedError,
    RateLimitedError,
    ServerError,
    UpstreamError,
    UpstreamTimeoutError,
)

__all__ = ["GeminiGenerateContent"]

PARAMS = ParamSupport(
    supported=frozenset({
        "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed",
        "presence_penalty", "frequency_penalty", "response_format", "tools", "tool_choice",
    }),
    unsupported=frozenset({
        "n", "logit_bias", "logprobs", "top_logprobs", "parallel_tool_calls", "reasoning_effort",
    }),
)

_ERRORS: dict[str, type[UpstreamError]] = {
    "RESOURCE_EXHAUSTED": RateLimitedError,
    "UNAVAILABLE": OverloadedError,
    "INTERNAL": ServerError,
    "UNKNOWN": ServerError,
    "INVALID_ARGUMENT": BadRequestError,
    "FAILED_PRECONDITION": BadRequestError,
    "NOT_FOUND": BadRequestError,
    "UNAUTHENTICATED": AuthenticationError,
    "PERMISSION_DENIED": AuthenticationError,
    "DEADLINE_EXCEEDED": UpstreamTimeoutError,
}
_CONTEXT = re.compile(r"input token count .*exceeds|exceeds the maximum number of tokens", re.I)
_AUTH_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED"})
_ROLES = {"user": "user", "assistant": "model"}


class GeminiGenerateContent:
    """The Gemini ``generateContent`` wire format."""

    name = "gemini"
    params = PARAMS

    def build_request(self, req: ChatRequest, deployment: Deployment) -> httpx.Request:
        req = PARAMS.apply(req, deployment, self.name)
        body: dict[str, Any] = {"contents": self._contents(req.messages)}
        system = system_texts(req.messages, self.name)
        if system:
            body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
        config = self._generation_config(req)
        if config:
            body["generationConfig"] = config
        body.update(self._tools(req))
        headers = {"content-type": "application/json", **deployment.headers}
        if deployment.api_key is not None:
            headers["x-goog-api-key"] = deployment.api_key.get_secret_value()
        model = deployment.model.removeprefix("models/")
        url = f"{deployment.base_url.rstrip('/')}/models/{model}:generateContent"
        return httpx.Request("POST", url, headers=headers, content=json.dumps(body))

    def _contents(self, messages: list[ChatMessage]) -> list[dict[str, Any]]:
        names = tool_names(messages, self.name)
        turns: list[tuple[str, list[dict[str, Any]]]] = []
        for m in messages:
            if m.role in ("system", "developer"):
                continue
            if m.role == "tool":
                turns.append(("user", [self._function_response(m, names)]))
            elif m.role in _ROLES:
                parts = self._parts(m)
                parts += [{"functionCall": {"name": c.name, "args": c.arguments}}
                          for c in parsed_tool_calls(m, self.name)]
                turns.append((_ROLES[m.role], parts))
            else:
                raise BadRequestError(f"{self.name} does not accept role {m.role!r}; use 'tool'",
                                      provider=self.name)
        return merge_turns(turns, "parts")

    def _parts(self, m: ChatMessage) -> list[dict[str, Any]]:
        if isinstance(m.content, str) or m.content is None:
            return [{"text": m.content}] if m.content else []
        parts: list[dict[str, Any]] = []
        for part in m.content:
            if part.type == "text":
                if part.text:
                    parts.append({"text": part.text})
            elif part.type == "image_url":
                image = image_of(part, self.name)
                if image.data is not None:
                    parts.append({"inlineData": {"mimeType": image.media_type, "data": image.data}})
                else:  # a public URL: Gemini fetches it
                    guessed = mimetypes.guess_type(image.url or "")[0]
                    ref = {"fileUri": image.url, **({"mimeType": guessed} if guessed else {})}
                    parts.append({"fileData": ref})
            else:
                raise unsupported_part(part, self.name)
        return parts

    def _function_response(self, m: ChatMessage, names: dict[str, str]) -> dict[str, Any]:
        name = names.get(m.tool_call_id or "")
        if name is None:
            raise BadRequestError(
                f"tool message answers unknown tool call {m.tool_call_id!r}", provider=self.name
            )
        text = plain_text(m, self.name)
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        response = value if isinstance(value, dict) else {"output": value}
        return {"functionResponse": {"name": name, "response": response}}

    def _generation_config(self, req: ChatRequest) -> dict[str, Any]:
        config: dict[str, Any] = {
            "maxOutputTokens": req.output_limit(),
            "temperature": req.temperature,
            "topP": req.top_p,
            "stopSequences": stop_list(req.stop),
            "seed": req.seed,
            "presencePenalty": req.presence_penalty,
            "frequencyPenalty": req.frequency_penalty,
        }
        fmt = output_format(req.response_format, self.name)
        if fmt is not None and fmt.kind != "text":
            config["responseMimeType"] = "application/json"
            config["responseJsonSchema"] = fmt.schema
        return {k: v for k, v in config.items() if v is not None}

    def _tools(self, req: ChatRequest) -> dict[str, Any]:
        tools = function_tools(req.tools, self.name)
        if not tools:
            return {}
        declarations = [
            {"name": t.name, **({"description": t.description} if t.description else {}),
             "parametersJsonSchema": t.parameters}
            for t in tools
        ]
        out: dict[str, Any] = {"tools": [{"functionDeclarations": declarations}]}
        choice = tool_choice(req.tool_choice, self.name)
        if choice is not None:
            modes = {"auto": "AUTO", "none": "NONE", "required": "ANY", "function": "ANY"}
            config: dict[str, Any] = {"mode": modes[choice.mode]}
            if choice.name:
                config["allowedFunctionNames"] = [choice.name]
            out["toolConfig"] = {"functionCallingConfig": config}
        return out

    def parse_response(self, resp: httpx.Response) -> ChatResult:
        body = read_json(resp, self.name)
        if resp.status_code >= 400 or "error" in body:
            raise self._error(resp, body)
        candidates = body.get("candidates")
        if not candidates:
            raise self._no_candidates(resp, body)
        first = candidates[0]
        parts = (first.get("content") or {}).get("parts") or []
        texts = [p["text"] for p in parts if "text" in p and not p.get("thought")]
        calls = [
            openai_tool_call(str(fc.get("id") or f"call_{i}"), str(fc.get("name")),
                             fc.get("args") or {})
            for i, fc in enumerate(p["functionCall"] for p in parts if "functionCall" in p)
        ]
        usage = _usage(body.get("usageMetadata") or {})
        completion = Completion(
            id=str(body.get("responseId", "")),
            model=str(body.get("modelVersion", "")),
            created=created_at(resp),
            text="".join(texts) if texts else None,
            tool_calls=calls,
            finish_reason=finish_reason(first.get("finishReason"), has_tool_calls=bool(calls)),
            usage=usage,
        )
        return ChatResult(body=completion.body(), usage=usage, request_id=completion.id,
                          status_code=resp.status_code)

    def _no_candidates(self, resp: httpx.Response, body: dict[str, Any]) -> UpstreamError:
        """A prompt blocked before generation, or a body that is not Gemini's."""
        reason = (body.get("promptFeedback") or {}).get("blockReason")
        if reason:
            return ContentFilteredError(f"prompt blocked: {reason}", provider=self.name,
                                        status=resp.status_code)
        return MalformedResponseError("response has no candidates", provider=self.name,
                                      status=resp.status_code)

    def _error(self, resp: httpx.Response, body: dict[str, Any]) -> UpstreamError:
        err = body.get("error")
        err = err if isinstance(err, dict) else {}
        message = str(err.get("message") or resp.reason_phrase or "upstream error")
        if resp.status_code < 400:
            resp = httpx.Response(500, headers=resp.headers)
        cls = _ERRORS.get(str(err.get("status") or ""))
        if cls is BadRequestError and _CONTEXT.search(message):
            cls = ContextLengthError
        if _reasons(err.get("details")) & _AUTH_REASONS:  # a bad key is a 400 INVALID_ARGUMENT
            cls = AuthenticationError
        error = error_for_status(resp, self.name, message) if cls is None else upstream_error(
            cls, resp, self.name, message)
        if error.retry_after is None:
            error.retry_after = _retry_delay(err.get("details"))
        return error


def _reasons(details: Any) -> set[str]:
    """The ``google.rpc.ErrorInfo`` reasons among an error's details."""
    items = details if isinstance(details, list) else []
    return {str(d.get("reason")) for d in items if isinstance(d, dict) and d.get("reason")}


def _retry_delay(details: Any) -> float | None:
    """The ``google.rpc.RetryInfo`` delay (``"37s"``) Gemini sends with quota errors."""
    for detail in details if isinstance(details, list) else []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                return None
    return None


def _usage(raw: dict[str, Any]) -> Usage:
    """Thinking tokens are billed as output; tool-use prompt tokens as input."""
    return Usage(
        prompt_tokens=int(raw.get("promptTokenCount") or 0)
        + int(raw.get("toolUsePromptTokenCount") or 0),
        completion_tokens=int(raw.get("candidatesTokenCount") or 0)
        + int(raw.get("thoughtsTokenCount") or 0),
        cached_tokens=int(raw.get("cachedContentTokenCount") or 0),
    )
