"""The chaos run: one big job through faults, SIGKILLs and a Redis restart that loses every key.

    .venv/bin/python -m bench.chaos                  # 10,000 requests, 3 workers, 5 kills,
                                                     # 1 Redis restart; about 1.5 minutes
    .venv/bin/python -m bench.chaos --db postgres    # the same on PostgreSQL
    .venv/bin/python -m bench.chaos --requests 1000 --kills 2 --lease-s 4   # the test's size

The mock upstream answers 10% of calls with a 500, 5% with a 429 and lets 2% hang past the
client timeout. Three ``batchyard worker`` processes run the job; at random points of its
progress (seeded) a random worker is SIGKILLed and a replacement started, and the private
``redis-server`` (no persistence, on a free port: the shared Redis is never touched) is killed
and started again empty. The run then audits the job the way a user would and exits 0 only
when every input line came back exactly once, every success carries one cost, the job's totals
equal the sum of its requests, exactly one terminal event was recorded and POSTed (one
``job.completed`` webhook id), and no worker exited by itself. ``--deadline-s`` bounds the time.

The package: ``plan`` (the knobs and the report), ``services`` (the private Redis and the
webhook receiver), ``run`` (the job, the workers, the faults), ``audit`` (the checks a user
can make on a finished job) and ``cli`` (``main``).
"""

from __future__ import annotations

from bench.chaos.audit import Audit, audit_job
from bench.chaos.cli import main
from bench.chaos.plan import Plan, Report
from bench.chaos.run import run, write_input
from bench.chaos.services import RedisServer, WebhookReceiver

__all__ = ["Audit", "Plan", "RedisServer", "Report", "WebhookReceiver", "audit_job", "main",
           "run", "write_input"]
