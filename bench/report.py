"""Turning a run's JSON into tables: rich for the terminal, Markdown for docs/PERFORMANCE.md.

``python -m bench.report [bench/results/latest.json]`` prints the Markdown tables.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["markdown", "print_table", "summary_rows", "transport_rows"]

Row = tuple[str, str, str, str]
"""(figure, measured, target, verdict)."""


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "NO")


def _e2e_rows(results: dict[str, Any]) -> Iterator[Row]:
    for r in _ok(results.get("throughput")):
        conc = r["in_flight"] * r["processes"]
        name = (f"end to end, {r['db']}, {r['latency_ms']:g} ms upstream, {conc} in flight "
                f"({r['processes']} proc)")
        value = (f"{r['rps']:,.0f} req/s = {r['ratio_to_limit']:.2f}x limit "
                 f"({r['limit_rps']:,.0f}); CPU/req {_spent(r)}; cores "
                 f"{_cores(r.get('cores'))}")
        if r["latency_ms"] == 0 and r["db"] == "postgres":
            yield name, value, ">= 1,000 req/s", _verdict(r["rps"] >= 1000)
        elif r["latency_ms"] >= 500:
            yield name, value, ">= 0.8x limit", _verdict(r["ratio_to_limit"] >= 0.8)
        else:
            yield name, value, "", "-"


def _overhead_rows(results: dict[str, Any]) -> Iterator[Row]:
    for r in _ok(results.get("overhead")):
        rounds = r.get("round_added_p50_ms", [])
        each = (f"; p50 of each of {len(rounds)} rounds: "
                f"{', '.join(str(v) for v in rounds)}" if len(rounds) > 1 else "")
        value = (f"p50 {r['added_p50_ms']} / p99 {r['added_p99_ms']} ms (producer "
                 f"{r['producer_p50_ms']}, queue {r['queue_p50_ms']}, worker "
                 f"{r['worker_p50_ms']}, write {r['write_p50_ms']}{each})")
        ok = r["added_p50_ms"] <= 5 and r["added_p99_ms"] <= 25
        yield f"overhead, {r['db']}, realtime, low load", value, "p50 <= 5, p99 <= 25", \
            _verdict(ok)


def _other_rows(results: dict[str, Any]) -> Iterator[Row]:
    p = results.get("priority")
    if p and "error" not in p:
        yield (f"realtime pickup under a {p['backlog']:,} bulk backlog ({p['db']})",
               f"p50 {p['pickup_p50_ms']:,.0f} / p95 {p['pickup_p95_ms']:,.0f} ms "
               f"(done p95 {p['done_p95_ms']:,.0f} ms)", "p95 <= 1,000 ms",
               _verdict(p["pickup_p95_ms"] <= 1000))
    for s in _ok(results.get("scale")):
        million_s = 1_000_000 / s["lines_per_s"]
        yield (f"submit {s['lines']:,} lines ({s['db']})",
               f"{s['lines_per_s']:,} lines/s = {million_s:.0f} s per million; producer "
               f"{s['producer_peak_rss_mb']:.0f} MB; {s['db_bytes_per_queued_request']} B "
               f"per queued row", "1M in <= 60 s", _verdict(million_s <= 60))
    rss = [r["worker_peak_rss_mb"] for r in _ok(results.get("throughput"))]
    if p and "error" not in p:
        rss.append(p["worker_peak_rss_mb"])
    if rss:
        yield ("worker peak RSS (largest process, all runs)", f"{max(rss):.0f} MB",
               "<= 300 MB", _verdict(max(rss) <= 300))
    for r in _ok(results.get("throughput")):
        if r["latency_ms"] == 0:
            yield (f"database size per million finished requests ({r['db']})",
                   f"{r['db_bytes_per_request'] * 1e6 / 2**30:.2f} GiB", "", "-")
    yield from _peer_rows(results)


def _peer_rows(results: dict[str, Any]) -> Iterator[Row]:
    peer = results.get("peer")
    if not peer or "error" in peer:
        return
    theirs = peer["litellm"]
    if "error" in theirs:
        yield "LiteLLM proxy, same work", f"not run: {theirs['error']}", ">= 5x", "-"
        return
    ours = peer["batchyard"]
    yield (f"vs LiteLLM proxy ({ours['requests']:,} req, {peer['concurrency']} in flight, "
           f"{ours['latency_ms']:g} ms)",
           f"{peer['ratio']:.1f}x: batchyard {ours['rps']:,.0f} req/s (stored), LiteLLM "
           f"{theirs['rps']:,.0f} req/s (proxied); CPU per request {peer['cpu_ratio']:.1f}x "
           f"less ({_spent(ours)} vs LiteLLM {theirs['cpu_ms_per_request']} ms)", ">= 5x",
           _verdict(peer["ratio"] >= 5))


def _spent(run: dict[str, Any]) -> str:
    spent = run.get("cpu_ms_per_request") or {}
    return " + ".join(f"{k} {v}" for k, v in spent.items() if k != "mock" and v) + " ms"


def summary_rows(results: dict[str, Any]) -> list[Row]:
    """The headline figures against the targets of issue 8."""
    return [*_e2e_rows(results), *_overhead_rows(results), *_other_rows(results),
            *_model_rows(results)]


def _model_rows(results: dict[str, Any]) -> Iterator[Row]:
    model = results.get("model")
    if not model or "error" in model:
        return
    for r in model["per_request"]:
        yield (f"model: Celery task per request, threads c={r['model'].rsplit('=', 1)[1]}",
               f"{r['rps']:,.0f} req/s (ideal {r['ideal_rps']:,}); cores "
               f"{_cores(r.get('cores'))}", "", "-")
    for r in model["chunked"]:
        ideal = r["in_flight"] * 1000 / r["latency_ms"]
        yield (f"model: batchyard chunks + asyncio, 1 process, {r['in_flight']} in flight",
               f"{r['rps']:,.0f} req/s end to end (ideal {ideal:,.0f}); cores "
               f"{_cores(r.get('cores'))}", "", "-")


def transport_rows(results: dict[str, Any]) -> list[list[str]]:
    """One row per (in flight, latency): req/s (and CPU ms per call) of each client."""
    table: dict[tuple[int, float], dict[str, str]] = {}
    for r in _ok(results.get("transport")):
        cpu = r.get("cpu_ms_per_request")
        cell = f"{r['rps']:,.0f}" + (f" ({cpu:.2f} ms)" if cpu is not None else "")
        table.setdefault((r["concurrency"], r["latency_ms"]), {})[r["client"]] = cell
    clients = ("httpx", "httpx-aiohttp", "aiohttp", "batchyard")
    return [[f"{c:,}", f"{lat:g}", *(row.get(k, "-") for k in clients)]
            for (c, lat), row in table.items()]


def _ok(section: Any) -> list[dict[str, Any]]:
    if not isinstance(section, list):
        return []
    return [r for r in section if "error" not in r]


def _cores(cores: dict[str, float] | None) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in (cores or {}).items())


def print_table(results: dict[str, Any]) -> None:
    console = Console()
    meta = results.get("meta", {})
    table = Table(title=f"batchyard benchmark ({meta.get('plan')}, {meta.get('started')}, "
                        f"load {meta.get('load_before')})")
    for column in ("figure", "measured", "target", "met"):
        table.add_column(column)
    for row in summary_rows(results):
        table.add_row(*row)
    console.print(table)
    clients = Table(title="HTTP clients against the mock: req/s (CPU ms per call)")
    for column in ("in flight", "latency ms", "httpx", "httpx-aiohttp", "aiohttp", "batchyard"):
        clients.add_column(column)
    for cells in transport_rows(results):
        clients.add_row(*cells)
    console.print(clients)
    for name, section in results.items():
        if isinstance(section, dict) and "error" in section:
            console.print(f"[red]{name} failed: {section['error']}[/red]")


def markdown(results: dict[str, Any]) -> str:
    """The same tables in Markdown."""
    lines = ["| figure | measured | target | met |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in summary_rows(results)]
    lines += ["", "| in flight | latency ms | httpx | httpx-aiohttp | aiohttp | batchyard |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in transport_rows(results)]
    return "\n".join(lines)


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/latest.json")
    print(markdown(json.loads(path.read_text())))
