"""Processes the benchmarks start: the mock upstream and real ``batchyard worker`` processes.

Each runs as its own OS process so it never shares a GIL with the client under test, and each
is stopped by its own pid. Peak memory comes from the kernel (``VmHWM`` in /proc), so it is
the real high-water mark, not a sample.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "ROOT",
    "CpuMeter",
    "MockProcess",
    "WorkerProcess",
    "cpu_seconds",
    "machine_busy_seconds",
    "peak_rss_mb",
    "tree_peak_rss_mb",
]

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory of one live process, in MiB (0 when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def tree_peak_rss_mb(pid: int) -> list[float]:
    """Peak RSS of ``pid`` and each of its descendants (forked engine processes)."""
    out = [peak_rss_mb(pid)]
    for child in _children(pid):
        out.extend(tree_peak_rss_mb(child))
    return out


class MockProcess:
    """``python -m mock_upstream`` in a subprocess on a free port; ``configure`` changes it live."""

    def __init__(self, latency_ms: float = 0.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mock_upstream", "--port", "0", "--latency-ms",
             str(latency_ms)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"the mock upstream did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[1].strip()
        self._http = httpx.Client(base_url=self.url, timeout=30)

    def configure(self, **fields: Any) -> None:
        self._http.post("/_mock/config", json=fields).raise_for_status()

    def reset(self) -> None:
        self._http.post("/_mock/reset").raise_for_status()

    def stats(self, *, arrivals: bool = False) -> dict[str, Any]:
        params = {"arrivals": "1"} if arrivals else {}
        result: dict[str, Any] = self._http.get("/_mock/stats", params=params).json()
        return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if hasattr(self, "_http"):
            self._http.close()


class WorkerProcess:
    """A real ``python -m batchyard worker`` with its own log file."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "batchyard", "worker", "--loglevel", "INFO", *args],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
        )

    def wait_ready(self, processes: int = 1, timeout: float = START_TIMEOUT_S) -> None:
        """Wait for Celery's ``ready.`` line (INFO, celery.apps.worker) from each process."""
        deadline = time.monotonic() + timeout
        while self.log_path.read_bytes().count(b" ready.") < processes:
            if self.proc.poll() is not None:
                raise RuntimeError(self.log_path.read_text()[-3000:])
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker not ready after {timeout}s: {self.log_path}")
            time.sleep(0.05)

    def peak_rss_mb(self) -> list[float]:
        return tree_peak_rss_mb(self.proc.pid)

    def stop(self, timeout: float = 60) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, *, tree: bool = True) -> float:
    """User + system CPU seconds of ``pid`` (and its descendants) so far (0 when gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / _TICKS
    return own + (sum(cpu_seconds(child) for child in _children(pid)) if tree else 0.0)


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + parts[4]
    return (sum(parts) - idle) / _TICKS, sum(parts) / _TICKS


class CpuMeter:
    """CPU used by named processes over a stretch of time, and by everything else on the box.

    ``other`` is the machine's busy time minus the named processes: the database, Redis, and
    whatever else runs on the machine (other people's tests included).
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._start = {name: self._cpu(pid) for name, pid in pids.items()}
        self._machine = machine_busy_seconds()
        self._wall = time.monotonic()

    @staticmethod
    def _cpu(pid: int) -> float:
        return cpu_seconds(pid, tree=pid != os.getpid())  # this process: not its children

    def stop(self) -> dict[str, float]:
        """Cores used on average by each name (1.0 = one core busy all along)."""
        wall = time.monotonic() - self._wall
        used = {name: self._cpu(pid) - self._start[name] for name, pid in self._pids.items()}
        busy = machine_busy_seconds()[0] - self._machine[0]
        used["other"] = max(0.0, busy - sum(used.values()))
        return {name: round(sec / wall, 2) for name, sec in used.items()} if wall else {}
