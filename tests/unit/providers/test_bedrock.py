"""Bedrock specifics beyond the contract: SigV4 signing, the optional extra, credentials, region."""

from __future__ import annotations

import hashlib
import hmac
import sys
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from providers.bedrock import BedrockConverse
from schemas.catalog import Deployment
from schemas.chat import ChatRequest
from schemas.errors import BadRequestError, ConfigError

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
REQ = ChatRequest.model_validate(
    {"model": "house-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9}
)


def _deployment(**overrides: Any) -> Deployment:
    fields: dict[str, Any] = {
        "name": "br", "provider": "bedrock", "model": "anthropic.claude-3-haiku-20240307-v1:0",
        "base_url": "https://bedrock-runtime.eu-west-3.amazonaws.com",
        "aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": SECRET,
    }
    return Deployment(**{**fields, **overrides})


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _expected_signature(request: httpx.Request, secret: str) -> str:
    """SigV4 recomputed from what httpx will send, following AWS's published algorithm."""
    auth = request.headers["authorization"]
    fields = dict(part.strip().split("=", 1) for part in auth.split(" ", 1)[1].split(","))
    signed = fields["SignedHeaders"].split(";")
    date, region, service, _ = fields["Credential"].split("/")[1:]
    path = request.url.raw_path.decode().split("?", 1)[0]
    canonical = "\n".join([
        request.method,
        quote(path, safe="/~"),  # non-S3 services: the already encoded path, encoded again
        "",
        "".join(f"{h}:{request.headers[h].strip()}\n" for h in signed),
        ";".join(signed),
        hashlib.sha256(request.content).hexdigest(),
    ])
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", request.headers["x-amz-date"], scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret}".encode(), date), region), service),
                "aws4_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_the_request_sent_carries_a_valid_sigv4_signature() -> None:
    pytest.importorskip("botocore")
    request = BedrockConverse().build_request(REQ, _deployment(aws_session_token="tok"))

    auth = request.headers["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-3/bedrock/aws4_request" in auth
    assert request.headers["x-amz-security-token"] == "tok"
    assert "x-amz-security-token" in auth and "host" in auth
    assert auth.endswith("Signature=" + _expected_signature(request, SECRET))


def test_a_tampered_body_no_longer_matches_the_signature() -> None:
    pytest.importorskip("botocore")
    request = BedrockConverse().build_request(REQ, _deployment())
    tampered = httpx.Request("POST", request.url, headers=request.headers,
                             content=request.content.replace(b"hi", b"ho"))

    assert not request.headers["authorization"].endswith(_expected_signature(tampered, SECRET))


def test_missing_botocore_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "botocore.auth", None)  # the import now fails

    with pytest.raises(ConfigError, match=r"pip install 'batchyard\[bedrock\]'"):
        BedrockConverse().build_request(REQ, _deployment())


def test_missing_credentials_are_a_config_error() -> None:
    pytest.importorskip("botocore")
    with pytest.raises(ConfigError, match="aws_access_key_id_env"):
        BedrockConverse().build_request(REQ, _deployment(aws_access_key_id=None))


def test_region_comes_from_the_deployment_before_the_host() -> None:
    pytest.importorskip("botocore")
    request = BedrockConverse().build_request(
        REQ, _deployment(base_url="https://vpce-0abc.bedrock.example.internal",
                         region="ap-south-1"))

    assert "/ap-south-1/bedrock/aws4_request" in request.headers["authorization"]


def test_a_base_url_without_region_and_no_region_set_is_a_config_error() -> None:
    pytest.importorskip("botocore")
    with pytest.raises(ConfigError, match="set region"):
        BedrockConverse().build_request(REQ, _deployment(base_url="https://proxy.internal"))


def test_image_links_are_refused_since_converse_takes_only_bytes() -> None:
    req = ChatRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]})

    with pytest.raises(BadRequestError, match="data: URLs") as raised:
        BedrockConverse().build_request(req, _deployment())
    assert raised.value.provider == "bedrock"
