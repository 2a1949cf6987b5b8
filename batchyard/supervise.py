"""``batchyard worker --processes N``: one command, N engine processes on this host.

Why: a worker process is one Python interpreter, so its CPU work (HTTP client, JSON, SQL
building) runs on one core at a time whatever its concurrency. Measured here (docs/
PERFORMANCE.md), one process saturates near one core at 0 ms upstream latency; N processes
use N cores. Each child is a complete, ordinary worker (its own engine, event loop, Celery
consumer and node name), started as a fresh interpreter rather than forked, so no thread or
connection of the parent leaks into it. The parent only forwards signals and waits: SIGTERM
stops every child gracefully, and the command exits when the last child has. Children run in
their own process group, so a Ctrl-C reaches each of them once (Celery takes a second SIGINT
as "stop now"), and on Linux they get SIGTERM if the parent dies.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

__all__ = ["child_hostname", "run_workers"]

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def child_hostname(hostname: str | None, index: int) -> str:
    """A distinct Celery node name per child: ``name-2@host`` from ``name@host``."""
    name, _, host = (hostname or "batchyard@%h").partition("@")
    return f"{name}-{index}@{host or '%h'}"


def run_workers(count: int, config: Path, options: Mapping[str, object],
                hostname: str | None) -> int:
    """Run ``count`` ``batchyard worker`` children with ``options``; the worst exit code.

    ``options`` maps a worker flag (``--tiers``) to its value; None values are left out.
    """
    env = {**os.environ, "BATCHYARD_CONFIG": str(config)}
    flags = [part for flag, value in options.items() if value is not None
             for part in (flag, str(value))]
    children = [
        subprocess.Popen([sys.executable, "-m", "batchyard", "worker", *flags,
                          "--hostname", child_hostname(hostname, i)],
                         env=env, process_group=0, preexec_fn=_die_with_parent)
        for i in range(1, count + 1)
    ]

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    try:
        codes = [child.wait() for child in children]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return max(codes, key=abs, default=0)
