"""The benchmark runner: ``python -m bench.run [--quick] [--only SECTION,...]``.

Measures, in one run and side by side on this machine (everything on 127.0.0.1, the mock
upstream in its own process): the direct-call limit and the HTTP client comparison, end-to-end
throughput, the per-request overhead, realtime pickup under a bulk backlog, large submissions,
LiteLLM's proxy on the same work, and Celery task-per-request against batchyard's chunked
asyncio engine. Prints a table, writes ``bench/results/latest.json`` (git-ignored; the figures
worth keeping go into docs/PERFORMANCE.md). See docs/PERFORMANCE.md for what each figure means.

Needs the local Redis (``BENCH_REDIS_URL``, default db 15: flushed, so never a shared db) and
PostgreSQL (``BENCH_POSTGRES_URL``; a throwaway database is created per run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.e2e import throughput
from bench.overhead import overhead
from bench.peer import peer
from bench.per_request import per_request
from bench.plan import FULL, QUICK, Plan
from bench.priority import priority
from bench.procs import ROOT, MockProcess
from bench.report import print_table
from bench.scale import scale

__all__ = ["main"]

SECTIONS = ("transport", "throughput", "overhead", "priority", "scale", "peer", "model")
CLIENTS = ("httpx", "httpx-aiohttp", "aiohttp", "batchyard")


def direct(url: str, client: str, concurrency: int, count: int, seconds: float
           ) -> dict[str, Any]:
    """``bench.direct`` in its own process."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.direct", "--client", client, "--url", url,
         "--concurrency", str(concurrency), "--count", str(count), "--seconds", str(seconds)],
        cwd=ROOT, capture_output=True, text=True, timeout=seconds + 180, check=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


class Run:
    """One benchmark run: the plan, the shared mock, a scratch folder, the results so far."""

    def __init__(self, plan: Plan, out: Path) -> None:
        self.plan = plan
        self.out = out
        self.folder = Path(tempfile.mkdtemp(prefix="batchyard-bench-"))
        self.mock = MockProcess()
        self.results: dict[str, Any] = {"meta": _meta(plan)}

    def section(self, name: str, body: Callable[[], Any]) -> None:
        print(f"== {name} ...", flush=True)
        started = time.monotonic()
        try:
            self.results[name] = body()
        except Exception as exc:
            traceback.print_exc()
            self.results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"   {name} took {time.monotonic() - started:.0f}s", flush=True)
        self.save()

    def save(self) -> None:
        self.results["meta"]["load_after"] = os.getloadavg()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.results, indent=2, default=str))

    def close(self) -> None:
        self.mock.stop()
        for data in self.folder.rglob("*.jsonl"):  # input files, up to 185 MB; logs stay
            data.unlink()
        print(f"worker and LiteLLM logs: {self.folder}")

    # -- the sections ------------------------------------------------------------------------

    def transport(self) -> list[dict[str, Any]]:
        rows = []
        for concurrency, latency in self.plan.transport:
            self.mock.configure(latency_ms=latency)
            for client in CLIENTS:
                result = direct(self.mock.url, client, concurrency, 1_000_000,
                                self.plan.transport_seconds)
                rows.append({**result, "latency_ms": latency})
        return rows

    def throughput(self) -> list[dict[str, Any]]:
        rows = []
        for db, load in self.plan.e2e:
            concurrency = load.in_flight * load.processes
            self.mock.configure(latency_ms=load.latency_ms)
            # the best of two: the machine's speed drifts between runs, and a slow measure of
            # the limit would flatter the ratio
            limit = max((direct(self.mock.url, "aiohttp", concurrency, load.count, 600)
                         for _ in range(2)), key=lambda r: r["rps"])
            result = throughput(self.mock, self.folder, db, load)
            # the limit pays no submission: it is the same calls at the same concurrency
            result["limit_rps"] = limit["rps"]
            result["ratio_to_limit"] = round(result["rps"] / limit["rps"], 2)
            rows.append(result)
        return rows

    def overhead(self) -> list[dict[str, Any]]:
        return overhead(self.mock, self.folder, dbs=self.plan.overhead_dbs,
                        count=self.plan.overhead_requests, rounds=self.plan.overhead_rounds)

    def priority(self) -> dict[str, Any]:
        return priority(self.mock, self.folder, "postgres", self.plan.priority,
                        self.plan.priority_probes)

    def scale(self) -> list[dict[str, Any]]:
        return [scale(self.mock, self.folder, db, self.plan.scale_lines)
                for db in self.plan.scale_dbs]

    def peer(self) -> dict[str, Any]:
        """Each side ``peer_repeats`` times, alternating; the best run of each is compared
        (other people's load on the machine comes and goes; it only ever slows a run down)."""
        load = self.plan.peer
        concurrency = load.in_flight * load.processes
        runs: dict[str, list[dict[str, Any]]] = {"batchyard": [], "litellm": []}
        for _ in range(self.plan.peer_repeats):
            runs["batchyard"].append(throughput(self.mock, self.folder, "postgres", load))
            runs["litellm"].append(peer(self.mock, self.folder, latency_ms=load.latency_ms,
                                        concurrency=concurrency, count=load.count,
                                        workers=load.processes))
            if "error" in runs["litellm"][-1]:
                break
        ours = max(runs["batchyard"], key=lambda r: r["rps"])
        theirs = max(runs["litellm"], key=lambda r: r.get("rps", 0))
        if "error" in theirs:
            return {"batchyard": ours, "litellm": theirs, "concurrency": concurrency}
        spent = ours["cpu_ms_per_request"]
        ours_cpu = spent["worker"] + spent["producer"] + spent["database"]
        return {"batchyard": ours, "litellm": theirs, "concurrency": concurrency,
                "all_rps": {side: [r.get("rps") for r in rs] for side, rs in runs.items()},
                "ratio": round(ours["rps"] / theirs["rps"], 2),
                "cpu_ratio": round(theirs["cpu_ms_per_request"] / ours_cpu, 2)}

    def model(self) -> dict[str, Any]:
        count = self.plan.model_requests
        latency = self.plan.model[0].latency_ms
        per_task = [per_request(self.mock, self.folder, latency_ms=latency, concurrency=c,
                                count=count) for c in self.plan.per_request]
        chunked = [throughput(self.mock, self.folder, "sqlite", load)
                   for load in self.plan.model]
        return {"per_request": per_task, "chunked": chunked, "latency_ms": latency}


def _meta(plan: Plan) -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    return {"plan": plan.name, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "cores": os.cpu_count(), "python": platform.python_version(), "commit": commit,
            "load_before": os.getloadavg()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: under ~3 minutes")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}")
    run = Run(QUICK if args.quick else FULL, args.out)
    started = time.monotonic()
    try:
        for name in SECTIONS:
            if name in chosen:
                run.section(name, getattr(run, name))
    finally:
        run.close()
    run.results["meta"]["seconds"] = round(time.monotonic() - started)
    run.save()
    print_table(run.results)
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
