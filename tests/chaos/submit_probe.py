"""Run in a subprocess by the hostile-input tests: submit one file, report what happened.

Prints one JSON object: the error (if any), the problems' line numbers, and the process's
peak resident memory, measured by the kernel (``ru_maxrss``) after the submission.
"""

from __future__ import annotations

import json
import resource
import sys

from producers import Producer
from schemas.errors import GatewayError, InputError


def main(path: str) -> None:
    producer = Producer.from_env()
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report: dict[str, object] = {"baseline_mb": baseline_kb / 1024}
    try:
        job = producer.submit(path)
        report["job"] = job.id
    except InputError as exc:
        report["error"] = str(exc)
        report["lines"] = [p.line for p in exc.problems]
        report["problem_count"] = len(exc.problems)
    except GatewayError as exc:
        report["error"] = str(exc)
    report["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
