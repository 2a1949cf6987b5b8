"""``batchyard worker --processes N``: one command, N worker processes, one SIGTERM stops all."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from schemas.jobs import JobStatus
from tests.helpers import wait_for
from tests.stack import Stack


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_one_command_runs_several_workers_and_stops_them_all(stack: Stack) -> None:
    worker = stack.start_worker("--processes", "2", ready=False)
    wait_for(lambda: worker.log_path.read_bytes().count(b" ready.") >= 2, 60,
             "both worker processes to be ready")
    nodes = set(re.findall(rb"(w0-\d)@\S+ ready\.", worker.log_path.read_bytes()))
    children = _children(worker.proc.pid)

    job = stack.producer.submit([f"question {i}" for i in range(200)], tier="bulk",
                                model="small")
    final = stack.producer.wait(job.id, timeout=120)

    assert nodes == {b"w0-1", b"w0-2"}
    assert len(children) == 2
    assert final.status is JobStatus.COMPLETED
    assert worker.stop() == 0
    assert not [pid for pid in children if os.path.exists(f"/proc/{pid}")]
