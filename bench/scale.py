"""Scale: submitting a very large input file, and what a million requests cost in the database.

The producer runs as its own process (``python -m bench.scale FILE``), so its peak RSS is its
own; no worker runs meanwhile, so the rate is the producer's alone: validate every line, insert
every row in one transaction, publish the chunk messages. Bytes per queued request come from
the database's size after the submission; bytes per finished request from the throughput runs.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.dbs import size_bytes
from bench.procs import ROOT, MockProcess
from bench.stack import stack, write_input

__all__ = ["scale"]


def scale(mock: MockProcess, folder: Path, db_kind: str, lines: int) -> dict[str, Any]:
    """Submit a ``lines``-line file to a fresh database; rate, peak RSS, bytes per row."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"input-{lines}.jsonl"
    if not path.exists():
        write_input(path, lines, prefix="scale")
    with stack(db_kind, mock.url, folder / f"scale-{db_kind}") as s:
        empty = size_bytes(s.settings.database_url)
        out = subprocess.run([sys.executable, "-m", "bench.scale", str(path)], env=s.env,
                             cwd=ROOT, capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            raise RuntimeError(f"the producer failed: {out.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        result["db_bytes_per_queued_request"] = round(
            (size_bytes(s.settings.database_url) - empty) / lines)
    result.update(db=db_kind, lines=lines, file_mb=round(path.stat().st_size / 2**20, 1))
    return result


def _submit(path: str) -> None:
    """In the producer process: submit ``path`` and print the rate and this process's peak RSS."""
    from producers import Producer

    producer = Producer.from_env()
    started = time.perf_counter()
    job = producer.submit(path, tier="bulk")
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    producer.cancel(job.id)  # nothing is meant to run it
    producer.close()
    print(json.dumps({"seconds": round(seconds, 2), "lines_per_s": round(job.total / seconds),
                      "producer_peak_rss_mb": round(peak_kb / 1024, 1)}))


if __name__ == "__main__":
    _submit(sys.argv[1])
