"""Webhook delivery: every worker runs a sender thread that leases due deliveries and POSTs them.

Deliveries are rows (the outbox, see storage/events.py), leased like requests, so any number
of workers share them and a crashed worker's lease simply runs out. Each attempt:

- checks the endpoint was not disabled by a 410, and the destination again (SSRF guard,
  schemas/destinations.py), then connects to the very address it checked;
- POSTs the Standard Webhooks body with a fresh timestamp and one signature per configured
  secret, the same ``webhook-id`` every time; follows no redirect; times out;
- records status or transport error, latency and the first 1 KB of the answer;
- 2xx ends it; 410 disables the endpoint; anything else retries on the schedule
  (``retry_schedule_s`` with jitter, at least the Retry-After the endpoint asked for) until
  the schedule runs out. ``job.progress`` events are tried once: a newer one supersedes them.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from schemas.destinations import Address, DestinationRefused, check_destination, resolve_host
from schemas.webhooks import (
    DeliveryState,
    EventType,
    JobEventData,
    WebhookEvent,
    WebhookSettings,
    signature_header,
)
from storage.events import (
    AttemptRecord,
    DueDelivery,
    claim_deliveries,
    is_disabled,
    record_attempt,
)

__all__ = ["Sent", "WebhookSender", "event_body", "next_step", "parse_retry_after"]

log = logging.getLogger(__name__)

EXCERPT_BYTES = 1024
USER_AGENT = "batchyard-webhooks/1"


@dataclass(frozen=True)
class Sent:
    """What one POST came back with: a status, or the transport error that stopped it."""

    status: int | None = None
    error: str | None = None
    latency_ms: float | None = None
    excerpt: str | None = None
    retry_after: float | None = None


def next_step(sent: Sent, attempt: int, conf: WebhookSettings, now: float, *,
              retries: bool = True, rand: Callable[[], float] = random.random
              ) -> tuple[DeliveryState, float | None]:
    """After attempt number ``attempt`` (1-based): the delivery's state and, to retry, when."""
    if sent.status is not None and 200 <= sent.status < 300:
        return DeliveryState.SUCCEEDED, None
    if sent.status == 410:
        return DeliveryState.DISABLED, None
    schedule = conf.retry_schedule_s
    if not retries or attempt > len(schedule):
        return DeliveryState.FAILED, None
    delay = schedule[attempt - 1] * (1 + conf.jitter * (2 * rand() - 1))
    if sent.retry_after is not None:
        delay = max(delay, min(sent.retry_after, conf.max_retry_after_s))
    return DeliveryState.PENDING, now + delay


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from ``now``: delta-seconds or an HTTP-date; None if absent/bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def event_body(delivery: DueDelivery, conf: WebhookSettings) -> str:
    """The JSON body: the same bytes on every attempt (the event's time, not the attempt's)."""
    data = JobEventData.model_validate(delivery.data)
    if conf.results_url:
        url = conf.results_url.format(job_id=data.id)
        data = data.model_copy(update={"results": data.results.model_copy(update={"url": url})})
    event = WebhookEvent(type=delivery.event_type, timestamp=delivery.created_at, data=data)
    return event.model_dump_json()


class WebhookSender:
    """Leases due deliveries and POSTs them from a small thread pool, until stopped."""

    def __init__(self, conf: WebhookSettings, db: Engine, *,
                 resolve: Callable[[str, int], list[Address]] = resolve_host,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._conf = conf
        self._db = db
        self._resolve = resolve
        self._token = secrets.token_hex(8)
        self._stop = threading.Event()
        self._client = httpx.Client(
            follow_redirects=False, trust_env=False, transport=transport,
            timeout=httpx.Timeout(conf.timeout_s, connect=conf.connect_timeout_s),
            limits=httpx.Limits(max_connections=conf.concurrency),
        )
        self._pool = ThreadPoolExecutor(conf.concurrency, thread_name_prefix="batchyard-hook")
        self._thread = threading.Thread(target=self._loop, name="batchyard-webhooks",
                                        daemon=True)

    def start(self) -> None:
        if not self._conf.secret:
            log.warning("no webhook signing secret (BATCHYARD_WEBHOOKS__SECRET): deliveries "
                        "will fail until one is set; `batchyard webhooks secret` makes one")
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once() >= self._conf.concurrency
            except (SQLAlchemyError, OSError) as exc:
                log.warning("webhook pass failed (%s: %s)", type(exc).__name__, exc)
                busy = False
            except Exception:  # a bug must not stop this worker's webhooks for good
                log.exception("webhook pass failed; trying again after %.1fs",
                              self._conf.poll_s)
                busy = False
            if not busy:
                self._stop.wait(self._conf.poll_s)

    def run_once(self) -> int:
        """Lease what is due now and deliver it; how many deliveries were attempted."""
        due = claim_deliveries(self._db, self._token, self._conf.lease_s, time.time(),
                               self._conf.concurrency)
        list(self._pool.map(self._deliver_safely, due))
        return len(due)

    def _deliver_safely(self, delivery: DueDelivery) -> None:
        try:
            self.deliver(delivery)
        except Exception:  # the lease runs out and another pass tries again
            log.exception("delivering event %s to %s failed", delivery.event_id, delivery.url)

    def deliver(self, delivery: DueDelivery) -> DeliveryState:
        """One attempt of ``delivery``, recorded; the state it is left in."""
        if is_disabled(self._db, delivery.url):
            record_attempt(self._db, delivery, None, DeliveryState.DISABLED, None)
            return DeliveryState.DISABLED
        started_at = datetime.now(UTC)
        sent = self._attempt(delivery)
        state, next_at = next_step(sent, delivery.attempt, self._conf, time.time(),
                                   retries=delivery.event_type is not EventType.PROGRESS)
        record = AttemptRecord(started_at=started_at, status_code=sent.status,
                               latency_ms=sent.latency_ms, error=sent.error,
                               response_excerpt=sent.excerpt)
        record_attempt(self._db, delivery, record, state, next_at)
        log.info("webhook %s %s to %s: attempt %d %s -> %s", delivery.event_type,
                 delivery.event_id, delivery.url, delivery.attempt,
                 sent.status or sent.error, state.value)
        return state

    def _attempt(self, delivery: DueDelivery) -> Sent:
        if not self._conf.secret:
            return Sent(error="no signing secret configured (BATCHYARD_WEBHOOKS__SECRET)")
        try:
            addresses = check_destination(delivery.url, self._conf.allow, resolve=self._resolve)
        except DestinationRefused as exc:
            return Sent(error=f"refused: {exc}")
        body = event_body(delivery, self._conf)
        stamp = int(time.time())
        headers = {
            "content-type": "application/json", "user-agent": USER_AGENT,
            "webhook-id": delivery.event_id, "webhook-timestamp": str(stamp),
            "webhook-signature": signature_header(self._conf.signing_secrets(),
                                                  delivery.event_id, stamp, body),
        }
        return self._post(delivery.url, addresses[0], body, headers)

    def _post(self, url: str, address: Address, body: str, headers: dict[str, str]) -> Sent:
        target, host, extensions = _pinned(url, address)
        began = time.monotonic()
        try:
            with self._client.stream("POST", target, content=body.encode(),
                                     headers={**headers, "host": host},
                                     extensions=extensions) as resp:
                excerpt = _excerpt(resp)
                elapsed = (time.monotonic() - began) * 1000
                return Sent(status=resp.status_code, latency_ms=round(elapsed, 3),
                            excerpt=excerpt, retry_after=parse_retry_after(
                                resp.headers.get("retry-after"), time.time()))
        except httpx.TimeoutException:
            error = f"timed out after {self._conf.timeout_s:g}s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        return Sent(error=error, latency_ms=round((time.monotonic() - began) * 1000, 3))


def _pinned(url: str, address: Address) -> tuple[str, str, dict[str, str]]:
    """``url`` aimed at ``address`` (the one the guard checked), its Host header, and the TLS
    server name so HTTPS still verifies the certificate for the original host."""
    parts = urlsplit(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    ip = f"[{address}]" if address.version == 6 else str(address)
    netloc = (f"{userinfo}@" if userinfo else "") + ip + (f":{parts.port}" if parts.port else "")
    extensions = {"sni_hostname": parts.hostname or ""} if parts.scheme == "https" else {}
    return urlunsplit(parts._replace(netloc=netloc)), hostport, extensions


def _excerpt(resp: httpx.Response) -> str | None:
    """The first KB of the answer, read no further (a receiver may answer with anything)."""
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= EXCERPT_BYTES:
            break
    raw = b"".join(chunks)[:EXCERPT_BYTES]
    return raw.decode("utf-8", "replace") if raw else None
