"""The chaos run of ``bench.chaos`` (``python -m bench.chaos``), at the test suite's size.

1,000 requests on a faulty mock upstream (10% 500s, 5% 429s, 2% timeouts), three workers, two
SIGKILLs and one Redis restart that loses every key; the job must end with every line once,
one cost per success and totals equal to the sum of its requests. About a minute.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.chaos import Plan, run


@pytest.mark.slow
def test_a_short_chaos_run_loses_nothing_and_charges_nothing_twice(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    plan = Plan(requests=1000, kills=2, redis_restarts=1, lease_s=4, deadline_s=100)

    report = run(plan, tmp_path)

    print(report.text())
    assert len(report.events) == 3  # every fault happened while the job ran
    assert report.problems() == []  # and no worker exited by itself, one job.completed id
    assert report.audit.lines == report.audit.distinct == 1000
    assert report.audit.cost_records == report.audit.succeeded
    assert report.upstream["total"] > 1000  # faults made the workers call again
