"""AWS Bedrock Converse (``POST {base_url}/model/{model}/converse``, base_url like
https://bedrock-runtime.us-east-1.amazonaws.com), signed with SigV4.

Signing uses botocore, an optional extra (``pip install 'batchyard[bedrock]'``) imported only
when a Bedrock request is built. Credentials come from the deployment's ``aws_*`` secrets, which
the catalog loader fills from the environment variables the catalog names; the region from
``region`` or else the base URL's host.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, unquote

import httpx

from providers.completion import Completion, created_at, finish_reason, openai_tool_call, read_json
from providers.errors import error_for_status, upstream_error
from providers.params import ParamSupport
from providers.translate import (
    function_tools,
    image_of,
    merge_turns,
    parsed_tool_calls,
    plain_text,
    stop_list,
    system_texts,
    tool_choice,
    unsupported_part,
)
from schemas.catalog import Deployment
from schemas.chat import ChatMessage, ChatRequest, ChatResult, Usage
from schemas.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ContextLengthError,
    MalformedResponseError,
    OverloadedError,
    RateLimitedError,
    ServerError,
    UpstreamError,
    UpstreamTimeoutError,
)

__all__ = ["BedrockConverse"]

PARAMS = ParamSupport(
    supported=frozenset({
        "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "tools",
        "tool_choice",
    }),
    unsupported=frozenset({
        "n", "seed", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
        "top_logprobs", "response_format", "parallel_tool_calls", "reasoning_effort",
    }),
    value_rules={"tool_choice": lambda v: "Converse has no 'none' mode" if v == "none" else None},
)

_ERRORS: dict[str, type[UpstreamError]] = {
    "ThrottlingException": RateLimitedError,
    "ServiceQuotaExceededException": RateLimitedError,
    "ServiceUnavailableException": OverloadedError,
    "ModelNotReadyException": OverloadedError,
    "InternalServerException": ServerError,
    "ModelErrorException": ServerError,
    "ValidationException": BadRequestError,
    "ResourceNotFoundException": BadRequestError,
    "AccessDeniedException": AuthenticationError,
    "UnrecognizedClientException": AuthenticationError,
    "ExpiredTokenException": AuthenticationError,
    "ModelTimeoutException": UpstreamTimeoutError,
}
_CONTEXT = re.compile(r"input is too long|too many (input )?tokens|prompt is too long|"
                      r"context (window|length)", re.I)
_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg",
                  "image/gif": "gif", "image/webp": "webp"}
_REGION_IN_HOST = re.compile(r"bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com")
_MODEL_IN_PATH = re.compile(r"/model/([^/]+)/converse$")
_MISSING_EXTRA = "Bedrock needs botocore for SigV4 signing: pip install 'batchyard[bedrock]'"


class BedrockConverse:
    """The Bedrock Converse wire format."""

    name = "bedrock"
    params = PARAMS

    def build_request(self, req: ChatRequest, deployment: Deployment) -> httpx.Request:
        req = PARAMS.apply(req, deployment, self.name)
        body = json.dumps(self._body(req)).encode()
        base = deployment.base_url.rstrip("/")
        url = f"{base}/model/{quote(deployment.model, safe='')}/converse"
        headers = _sign(url, body, deployment)
        headers.update(deployment.headers)
        return httpx.Request("POST", url, headers=headers, content=body)

    def _body(self, req: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": self._messages(req.messages)}
        system = system_texts(req.messages, self.name)
        if system:
            body["system"] = [{"text": text} for text in system]
        config = {
            "maxTokens": req.output_limit(),
            "temperature": req.temperature,
            "topP": req.top_p,
            "stopSequences": stop_list(req.stop),
        }
        config = {k: v for k, v in config.items() if v is not None}
        if config:
            body["inferenceConfig"] = config
        tools = self._tool_config(req)
        if tools:
            body["toolConfig"] = tools
        return body

    def _messages(self, messages: list[ChatMessage]) -> list[dict[str, Any]]:
        turns: list[tuple[str, list[dict[str, Any]]]] = []
        for m in messages:
            if m.role in ("system", "developer"):
                continue
            if m.role == "tool":
                text = plain_text(m, self.name)
                result = {"toolUseId": m.tool_call_id or "", "content": [{"text": text}]}
                turns.append(("user", [{"toolResult": result}]))
            elif m.role in ("user", "assistant"):
                blocks = self._blocks(m)
                blocks += [{"toolUse": {"toolUseId": c.id, "name": c.name, "input": c.arguments}}
                           for c in parsed_tool_calls(m, self.name)]
                turns.append((m.role, blocks))
            else:
                raise BadRequestError(f"{self.name} does not accept role {m.role!r}; use 'tool'",
                                      provider=self.name)
        return merge_turns(turns, "content")

    def _blocks(self, m: ChatMessage) -> list[dict[str, Any]]:
        if isinstance(m.content, str) or m.content is None:
            return [{"text": m.content}] if m.content else []
        blocks: list[dict[str, Any]] = []
        for part in m.content:
            if part.type == "text":
                if part.text:
                    blocks.append({"text": part.text})
            elif part.type == "image_url":
                blocks.append({"image": self._image(part)})
            else:
                raise unsupported_part(part, self.name)
        return blocks

    def _image(self, part: Any) -> dict[str, Any]:
        image = image_of(part, self.name)
        fmt = _IMAGE_FORMATS.get(image.media_type or "")
        if image.data is None or fmt is None:
            raise BadRequestError(
                f"{self.name} accepts images only as base64 data: URLs of type png, jpeg, gif "
                "or webp", provider=self.name,
            )
        return {"format": fmt, "source": {"bytes": image.data}}

    def _tool_config(self, req: ChatRequest) -> dict[str, Any]:
        tools = function_tools(req.tools, self.name)
        if not tools:
            return {}
        specs = [
            {"toolSpec": {"name": t.name, **({"description": t.description} if t.description
                                            else {}), "inputSchema": {"json": t.parameters}}}
            for t in tools
        ]
        config: dict[str, Any] = {"tools": specs}
        choice = tool_choice(req.tool_choice, self.name)
        if choice is not None and choice.mode == "required":
            config["toolChoice"] = {"any": {}}
        elif choice is not None and choice.mode == "function":
            config["toolChoice"] = {"tool": {"name": choice.name}}
        elif choice is not None and choice.mode == "auto":
            config["toolChoice"] = {"auto": {}}
        return config

    def parse_response(self, resp: httpx.Response) -> ChatResult:
        body = read_json(resp, self.name)
        if resp.status_code >= 400:
            raise self._error(resp, body)
        message = (body.get("output") or {}).get("message")
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            raise MalformedResponseError("response has no output message", provider=self.name,
                                         status=resp.status_code)
        blocks = message["content"]
        texts = [b["text"] for b in blocks if "text" in b]
        calls = [openai_tool_call(str(u.get("toolUseId")), str(u.get("name")), u.get("input") or {})
                 for u in (b["toolUse"] for b in blocks if "toolUse" in b)]
        usage = _usage(body.get("usage") or {})
        request_id = resp.headers.get("x-amzn-requestid", "")
        completion = Completion(
            id=request_id,
            model=_model_of(resp),
            created=created_at(resp),
            text="".join(texts) if texts else None,
            tool_calls=calls,
            finish_reason=finish_reason(body.get("stopReason"), has_tool_calls=bool(calls)),
            usage=usage,
        )
        return ChatResult(body=completion.body(), usage=usage, request_id=request_id,
                          status_code=resp.status_code)

    def _error(self, resp: httpx.Response, body: dict[str, Any]) -> UpstreamError:
        kind = resp.headers.get("x-amzn-errortype") or str(body.get("__type") or "")
        kind = kind.split(":", 1)[0].rsplit("#", 1)[-1]
        message = str(body.get("message") or body.get("Message") or kind or "upstream error")
        cls = _ERRORS.get(kind)
        if cls is BadRequestError and _CONTEXT.search(message):
            cls = ContextLengthError
        if cls is None:
            return error_for_status(resp, self.name, message)
        return upstream_error(cls, resp, self.name, message)


def _sign(url: str, body: bytes, deployment: Deployment) -> dict[str, str]:
    """SigV4 headers (with content-type) for a Converse POST; needs the ``bedrock`` extra."""
    try:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
    except ImportError as exc:
        raise ConfigError(_MISSING_EXTRA) from exc
    key_id, secret = deployment.aws_access_key_id, deployment.aws_secret_access_key
    if key_id is None or secret is None:
        raise ConfigError(
            f"deployment {deployment.name or deployment.model!r}: Bedrock needs AWS credentials "
            "(aws_access_key_id_env and aws_secret_access_key_env)"
        )
    token = deployment.aws_session_token
    credentials = Credentials(key_id.get_secret_value(), secret.get_secret_value(),
                              token.get_secret_value() if token is not None else None)
    aws = AWSRequest(method="POST", url=url, data=body,
                     headers={"content-type": "application/json"})
    SigV4Auth(credentials, "bedrock", _region(deployment)).add_auth(aws)
    return {str(k): str(v) for k, v in aws.headers.items()}


def _region(deployment: Deployment) -> str:
    if deployment.region:
        return deployment.region
    match = _REGION_IN_HOST.search(deployment.base_url)
    if match is None:
        raise ConfigError(
            f"deployment {deployment.name or deployment.model!r}: set region (the base_url "
            f"{deployment.base_url!r} does not name one)"
        )
    return match[1]


def _model_of(resp: httpx.Response) -> str:
    """The model id, from the request path (Converse answers do not repeat it)."""
    try:
        path = resp.request.url.raw_path.decode().split("?", 1)[0]
    except RuntimeError:  # a response built without its request
        return ""
    match = _MODEL_IN_PATH.search(path)
    return unquote(match[1]) if match else ""


def _usage(raw: dict[str, Any]) -> Usage:
    """Converse counts cache reads and writes apart from ``inputTokens``; we add them."""
    cached = int(raw.get("cacheReadInputTokens") or 0)
    written = int(raw.get("cacheWriteInputTokens") or 0)
    return Usage(
        prompt_tokens=int(raw.get("inputTokens") or 0) + cached + written,
        completion_tokens=int(raw.get("outputTokens") or 0),
        cached_tokens=cached,
    )

