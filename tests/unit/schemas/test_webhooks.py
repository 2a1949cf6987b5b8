"""Standard Webhooks signing: our signatures verify with the reference package and back."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from schemas.webhooks import (
    SignatureError,
    WebhookSettings,
    new_secret,
    sign,
    signature_header,
    verify,
)

BODY = json.dumps({"type": "job.completed", "data": {"id": "batch_1"}})


def _headers(msg_id: str, stamp: int, signature: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp),
            "webhook-signature": signature}


def test_our_signature_verifies_with_the_standardwebhooks_package() -> None:
    secret = new_secret()
    stamp = int(time.time())

    headers = _headers("msg_1", stamp, sign(secret, "msg_1", stamp, BODY))

    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)


def test_the_packages_signature_verifies_with_ours() -> None:
    secret = new_secret()
    now = datetime.now(UTC)
    signature = Webhook(secret).sign("msg_2", now, BODY)

    headers = _headers("msg_2", int(now.timestamp()), signature)

    assert verify(secret, BODY.encode(), headers)["data"]["id"] == "batch_1"


def test_during_rotation_either_secret_verifies() -> None:
    old, new = new_secret(), new_secret()
    stamp = int(time.time())
    header = signature_header([new, old], "msg_3", stamp, BODY)

    assert len(header.split(" ")) == 2
    for secret in (old, new):
        assert verify(secret, BODY, _headers("msg_3", stamp, header))
        assert Webhook(secret).verify(BODY, _headers("msg_3", stamp, header))


def test_a_tampered_body_a_wrong_secret_or_a_stale_timestamp_is_refused() -> None:
    secret = new_secret()
    stamp = int(time.time())
    good = _headers("msg_4", stamp, sign(secret, "msg_4", stamp, BODY))
    stale = int(time.time()) - 3600

    with pytest.raises(SignatureError, match="no signature matches"):
        verify(secret, BODY.replace("batch_1", "batch_2"), good)
    with pytest.raises(SignatureError, match="no signature matches"):
        verify(new_secret(), BODY, good)
    with pytest.raises(SignatureError, match="tolerance"):
        verify(secret, BODY, _headers("msg_4", stale, sign(secret, "msg_4", stale, BODY)))
    with pytest.raises(SignatureError, match="missing"):
        verify(secret, BODY, {"webhook-id": "msg_4"})


def test_settings_take_secrets_and_allow_lists_from_plain_words() -> None:
    a, b = new_secret(), new_secret()

    conf = WebhookSettings.model_validate({"secret": f"{a} {b}",
                                           "allow": "127.0.0.1, 10.0.0.0/8,Hooks.Internal"})

    assert conf.signing_secrets() == [a, b]
    assert conf.allow == ["127.0.0.1", "10.0.0.0/8", "hooks.internal"]
    assert a not in repr(conf)  # secrets never show in logs
    with pytest.raises(ValueError, match="whsec_"):
        WebhookSettings.model_validate({"secret": "whsec_not base64!"})
    with pytest.raises(ValueError):
        WebhookSettings.model_validate({"allow": "10.0.0.0/99"})
