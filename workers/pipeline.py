"""One attempt of one request, as a plain async function: route, call, price, classify.

No Celery and no database here: the engine feeds it claimed rows and hands its outcomes to the
writer, so it can be tested with a fake client.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from providers.client import UpstreamClient
from providers.registry import get_provider
from routing.pricing import cost_of
from routing.retry import retry_delay
from routing.router import Router
from schemas.chat import ChatRequest
from schemas.errors import GatewayError, UpstreamError
from schemas.outcomes import Claimed, Outcome, OutcomeKind
from schemas.settings import WorkerSettings

__all__ = ["Pipeline"]

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    """Runs attempts against the upstreams the router picks."""

    router: Router
    client: UpstreamClient
    settings: WorkerSettings

    async def run(self, row: Claimed) -> Outcome:
        """The outcome of one attempt; never raises."""
        base: dict[str, Any] = {"job_id": row.job_id, "seq": row.seq, "claim": row.claim}
        try:
            req = ChatRequest.model_validate_json(row.body)
            deployment = self.router.pick(req.model)
            provider = get_provider(deployment.provider)
        except (ValidationError, GatewayError) as exc:
            code = getattr(exc, "code", "invalid_request")
            return Outcome(kind=OutcomeKind.FAILED, error_code=code, error_message=str(exc),
                           **base)
        where = {"deployment": deployment.name, "provider": provider.name}
        try:
            reply = await self.client.send(provider, req, deployment)
        except UpstreamError as exc:
            return self._failed_attempt(row, exc, base | where)
        except Exception as exc:  # a bug must not lose the request: fail it loudly
            log.exception("unexpected error running %s/%s", row.job_id, row.seq)
            return Outcome(kind=OutcomeKind.FAILED, error_code="internal_error",
                           error_message=f"{type(exc).__name__}: {exc}", **base | where)
        result = reply.result
        return Outcome(
            kind=OutcomeKind.SUCCEEDED, status_code=result.status_code,
            upstream_request_id=result.request_id[:128], response=json.dumps(result.body),
            usage=result.usage, cost=cost_of(result.usage, deployment.pricing),
            latency_ms=round(reply.latency_ms, 3), **base | where,
        )

    def _failed_attempt(self, row: Claimed, exc: UpstreamError, base: dict[str, Any]
                        ) -> Outcome:
        fields: dict[str, Any] = {"status_code": exc.status, "error_code": exc.code,
                                  "error_message": exc.describe()}
        if exc.retryable and row.attempts < self.settings.max_attempts:
            delay = retry_delay(row.attempts, base_s=self.settings.backoff_base_s,
                                max_s=self.settings.backoff_max_s, retry_after=exc.retry_after)
            return Outcome(kind=OutcomeKind.DEFERRED, not_before=time.time() + delay,
                           **base, **fields)
        if exc.retryable:
            fields["error_message"] = (
                f"gave up after {row.attempts} attempts; last error: {exc.describe()}"
            )
        return Outcome(kind=OutcomeKind.FAILED, **base, **fields)
