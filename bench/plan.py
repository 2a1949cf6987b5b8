"""What a benchmark run measures: the sizes of the full run and of ``--quick``.

Every count and duration is bounded here, so a run's length is known in advance: the full run
takes 10-17 minutes on a 2-core machine (more when others load it), ``--quick`` about 2.5.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.e2e import Load

__all__ = ["FULL", "QUICK", "Plan"]


@dataclass(frozen=True)
class Plan:
    """Sizes of one run."""

    name: str
    transport: tuple[tuple[int, float], ...]
    """(in flight, upstream latency ms) pairs for the client comparison."""
    transport_seconds: float
    e2e: tuple[tuple[str, Load], ...]
    """(database, load) end-to-end runs; each is compared with the direct limit."""
    overhead_requests: int
    """jobs per database and round."""
    overhead_dbs: tuple[str, ...]
    overhead_rounds: int
    priority: Load
    priority_probes: int
    scale_lines: int
    scale_dbs: tuple[str, ...]
    peer: Load
    peer_repeats: int
    """runs of each side, alternating; the best of each is compared."""
    model: tuple[Load, ...]
    """batchyard runs at the model comparison's latency (one process)."""
    per_request: tuple[int, ...]
    """thread counts of the task-per-request worker."""
    model_requests: int


def _e2e(count: int, latencies: tuple[float, ...], dbs: tuple[str, ...]
         ) -> tuple[tuple[str, Load], ...]:
    # Two processes of 512 (one per core) on both databases: with writes batched, SQLite's
    # one writer at a time is no bottleneck (20,000 at 0 ms: 1,441 req/s, one process 991).
    return tuple((db, Load(count, latency, 512, 2)) for latency in latencies for db in dbs)


FULL = Plan(
    name="full",
    transport=((64, 0.0), (1024, 0.0), (64, 500.0), (1024, 500.0)),
    transport_seconds=6.0,
    e2e=_e2e(20_000, (0.0, 500.0), ("sqlite", "postgres")),
    overhead_requests=400,
    overhead_dbs=("sqlite", "postgres"),
    overhead_rounds=3,
    priority=Load(100_000, 200.0, 512, 2),
    priority_probes=40,
    scale_lines=1_000_000,
    scale_dbs=("sqlite", "postgres"),
    peer=Load(20_000, 0.0, 128, 2),
    peer_repeats=2,
    model=(Load(5_000, 200.0, 64), Load(5_000, 200.0, 512)),
    per_request=(64, 256),
    model_requests=5_000,
)

QUICK = Plan(
    name="quick",
    transport=((64, 0.0), (1024, 500.0)),
    transport_seconds=2.0,
    e2e=(*_e2e(5_000, (0.0,), ("sqlite", "postgres")), *_e2e(5_000, (500.0,), ("postgres",))),
    overhead_requests=50,
    overhead_dbs=("sqlite", "postgres"),
    overhead_rounds=1,
    priority=Load(10_000, 200.0, 512, 2),
    priority_probes=8,
    scale_lines=100_000,
    scale_dbs=("postgres",),
    peer=Load(1_000, 0.0, 128, 2),
    peer_repeats=1,
    model=(Load(1_000, 200.0, 512),),
    per_request=(64,),
    model_requests=1_000,
)
