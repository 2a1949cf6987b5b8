"""What a chaos run does (``Plan``) and what it found (``Report``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.chaos.audit import Audit

__all__ = ["Plan", "Report"]


@dataclass(frozen=True)
class Plan:
    """What the run does; the defaults are the 10,000-request run of docs/RELIABILITY.md."""

    requests: int = 10_000
    workers: int = 3
    kills: int = 5
    redis_restarts: int = 1
    error_rate: float = 0.10
    throttle_rate: float = 0.05
    timeout_rate: float = 0.02
    latency_ms: float = 50.0
    upstream_timeout_s: float = 2.0
    lease_s: float = 10.0
    redis_down_s: float = 1.0
    deadline_s: float = 900.0
    db: str = "sqlite"
    seed: int = 7

    def worker_env(self) -> dict[str, str]:
        """Short leases and timeouts so that each fault costs seconds, not minutes."""
        return {
            "BATCHYARD_WORKER__LEASE_S": str(self.lease_s),
            "BATCHYARD_WORKER__VISIBILITY_TIMEOUT_S": str(self.lease_s),
            "BATCHYARD_WORKER__RECONCILE_INTERVAL_S": "1",
            "BATCHYARD_WORKER__DISPATCH_GRACE_S": "5",
            "BATCHYARD_WORKER__BACKOFF_BASE_S": "0.2",
            "BATCHYARD_WORKER__BACKOFF_MAX_S": "2",
            "BATCHYARD_WORKER__SHUTDOWN_GRACE_S": "5",
            "BATCHYARD_UPSTREAM__TIMEOUT_S": str(self.upstream_timeout_s),
        }


@dataclass
class Report:
    plan: Plan
    audit: Audit
    elapsed_s: float
    events: list[str]
    upstream: dict[str, Any]
    webhook_ids: int
    """Distinct ``webhook-id``s of the job.completed POSTs the receiver got (must be 1)."""
    crashed: int
    """Workers that exited on their own (not killed by the run): must be 0."""

    def problems(self) -> list[str]:
        return [*self.audit.problems(),
                *([] if self.webhook_ids == 1 else [f"{self.webhook_ids} job.completed ids"]),
                *([] if self.crashed == 0 else [f"{self.crashed} workers exited by themselves"])]

    @property
    def passed(self) -> bool:
        return not self.problems()

    def text(self) -> str:
        p = self.plan
        head = [f"chaos run: {p.requests} requests, {p.workers} workers, {p.kills} SIGKILLs, "
                f"{p.redis_restarts} Redis restart(s), {p.db}, lease {p.lease_s:g}s, seed "
                f"{p.seed}", *(f"  {e}" for e in self.events),
                f"elapsed              {self.elapsed_s:.1f}s",
                f"upstream calls       {self.upstream.get('total')} "
                f"{self.upstream.get('by_status')}"]
        verdict = "PASS" if self.passed else "FAIL: " + "; ".join(self.problems())
        return "\n".join([*head, *self.audit.lines_of_report(),
                          f"job.completed ids    {self.webhook_ids} (webhook POSTs received)",
                          f"workers crashed      {self.crashed} (besides the SIGKILLs)",
                          verdict])

