"""Webhook delivery: the retry plan, and the sender against a real local receiver and SQLite."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from ipaddress import ip_address

import pytest
from sqlalchemy import Engine
from standardwebhooks import Webhook

from schemas.jobs import JobOptions
from schemas.keys import Tier
from schemas.outcomes import Outcome, OutcomeKind
from schemas.webhooks import DeliveryState, WebhookSettings, new_secret
from storage import NewJob, claim, create_job, make_engine, record
from storage.events import redeliver
from storage.webhook_log import list_deliveries
from tests.webhook_receiver import Receiver, receiver
from workers.webhooks import Sent, WebhookSender, _pinned, next_step, parse_retry_after

SECRET = new_secret()
FAST = WebhookSettings.model_validate({"secret": SECRET, "allow": "127.0.0.1",
                                       "retry_schedule_s": [0, 0, 0], "jitter": 0})


# --- the plan after an attempt -------------------------------------------------------------

def test_the_schedule_spaces_retries_with_jitter_then_gives_up() -> None:
    conf = WebhookSettings(jitter=0.1)
    failed = Sent(status=500)

    low = next_step(failed, 1, conf, 1000.0, rand=lambda: 0.0)
    high = next_step(failed, 2, conf, 1000.0, rand=lambda: 1.0)

    assert low == (DeliveryState.PENDING, pytest.approx(1000 + 5 * 0.9))
    assert high == (DeliveryState.PENDING, pytest.approx(1000 + 300 * 1.1))
    assert next_step(failed, 9, conf, 0.0, rand=lambda: 0.5) == (DeliveryState.PENDING, 86400)
    assert next_step(failed, 10, conf, 0.0) == (DeliveryState.FAILED, None)


def test_success_410_retry_after_and_progress_events() -> None:
    conf = WebhookSettings(jitter=0, max_retry_after_s=600)

    assert next_step(Sent(status=204), 1, conf, 0.0) == (DeliveryState.SUCCEEDED, None)
    assert next_step(Sent(status=410), 1, conf, 0.0) == (DeliveryState.DISABLED, None)
    assert next_step(Sent(status=429, retry_after=120), 1, conf, 0.0) == (
        DeliveryState.PENDING, 120)
    assert next_step(Sent(status=503, retry_after=99999), 1, conf, 0.0) == (
        DeliveryState.PENDING, 600)
    assert next_step(Sent(error="timeout"), 1, conf, 0.0, retries=False) == (
        DeliveryState.FAILED, None)


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("30", now) == 30
    assert parse_retry_after("Tue, 14 Nov 2023 22:15:00 GMT", now) == pytest.approx(100)
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_the_post_goes_to_the_checked_address_under_the_original_host() -> None:
    url, host, ext = _pinned("https://u:p@hooks.example.com:8443/a?b=1",
                             ip_address("93.184.216.34"))
    assert (url, host, ext) == ("https://u:p@93.184.216.34:8443/a?b=1",
                                "hooks.example.com:8443", {"sni_hostname": "hooks.example.com"})
    assert _pinned("http://h/x", ip_address("2001:db8::1"))[0] == "http://[2001:db8::1]/x"


# --- the sender, end to end on SQLite --------------------------------------------------------

@pytest.fixture
def db(sqlite_url: str) -> Engine:
    return make_engine(sqlite_url)


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


def _finished_job(db: Engine, url: str, name: str = "batch_hook") -> str:
    create_job(db, NewJob(name, Tier.HIGH, JobOptions(webhook_url=url)),
               [("a", "m", "{}"), ("b", "m", "{}")], batch=10, check=lambda conn: None)
    claim(db, name, [0, 1], "w", lease_s=60, now=time.time())
    record(db, [Outcome(kind=OutcomeKind.SUCCEEDED, job_id=name, seq=s, claim="w",
                        status_code=200, response="{}") for s in (0, 1)])
    return name


def _drain(sender: WebhookSender, rounds: int = 10) -> None:
    for _ in range(rounds):
        if sender.run_once() == 0:
            return


def test_a_finished_job_is_posted_once_signed_with_its_counts(db: Engine, hook: Receiver) -> None:
    job = _finished_job(db, hook.url)
    sender = WebhookSender(FAST.model_copy(update={"results_url": "https://by.example/{job_id}"}),
                           db)
    _drain(sender)
    sender.stop()

    assert len(hook.received) == 1
    got = hook.received[0]
    body = Webhook(SECRET).verify(got.body, got.headers)
    assert body["type"] == "job.completed"
    assert body["data"]["request_counts"]["succeeded"] == 2
    assert body["data"]["results"]["url"] == f"https://by.example/{job}"
    assert got.headers["webhook-id"].startswith("msg_")
    [delivery] = list_deliveries(db, job)
    assert delivery.state is DeliveryState.SUCCEEDED and delivery.attempts == 1
    assert delivery.attempt_log[0].response_excerpt == "ok"


def test_a_410_disables_the_endpoint_until_a_redelivery(db: Engine, hook: Receiver) -> None:
    hook.answer(410)
    first = _finished_job(db, hook.url, "batch_gone1")
    sender = WebhookSender(FAST, db)
    _drain(sender)
    second = _finished_job(db, hook.url, "batch_gone2")
    _drain(sender)

    assert len(hook.received) == 1
    assert list_deliveries(db, first)[0].state is DeliveryState.DISABLED
    assert list_deliveries(db, second)[0].state is DeliveryState.DISABLED

    redeliver(db, list_deliveries(db, second)[0].event_id)
    _drain(sender)
    sender.stop()
    assert len(hook.received) == 2
    assert [d.state for d in list_deliveries(db, second)] == [DeliveryState.DISABLED,
                                                              DeliveryState.SUCCEEDED]


def test_redirects_are_not_followed_and_answers_are_cut_at_1_kb(db: Engine, hook: Receiver
                                                                ) -> None:
    hook.answer(302, {"location": "/elsewhere"})
    hook.default = (200, {}, b"x" * 10_000)
    job = _finished_job(db, hook.url)
    sender = WebhookSender(FAST, db)
    _drain(sender)
    sender.stop()

    assert [r.path for r in hook.received] == ["/hook", "/hook"]
    [delivery] = list_deliveries(db, job)
    assert [a.status_code for a in delivery.attempt_log] == [302, 200]
    assert len(delivery.attempt_log[1].response_excerpt or "") == 1024


def test_a_destination_not_allow_listed_is_refused_at_delivery(db: Engine, hook: Receiver
                                                               ) -> None:
    job = _finished_job(db, hook.url)
    sender = WebhookSender(FAST.model_copy(update={"allow": [], "retry_schedule_s": []}), db)
    _drain(sender)
    sender.stop()

    assert hook.received == []
    [delivery] = list_deliveries(db, job)
    assert delivery.state is DeliveryState.FAILED
    assert "refused" in (delivery.attempt_log[0].error or "")
    assert "127.0.0.1 (loopback)" in (delivery.last_error or "")


def test_an_endpoint_that_never_answers_times_out(db: Engine) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        job = _finished_job(db, url)
        conf = FAST.model_copy(update={"timeout_s": 0.3, "retry_schedule_s": []})
        sender = WebhookSender(conf, db)
        _drain(sender)
        sender.stop()

    [delivery] = list_deliveries(db, job)
    assert delivery.state is DeliveryState.FAILED
    assert delivery.attempt_log[0].error == "timed out after 0.3s"
    assert json.dumps(delivery.model_dump(mode="json"))  # the CLI's --json view serialises
