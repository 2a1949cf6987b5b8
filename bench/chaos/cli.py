"""``python -m bench.chaos``: the command line of the chaos run."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from tempfile import TemporaryDirectory

from bench.chaos.plan import Plan
from bench.chaos.run import run

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chaos run with the knobs of ``argv``, print its report; 0 on PASS."""
    import bench.chaos as package  # its docstring is the command's help

    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=package.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Plan()
    for name, value in vars(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--folder", type=Path, help="keep logs and the database here")
    parser.add_argument("--json", type=Path, help="also write the report here as JSON")
    args = vars(parser.parse_args(argv))
    folder, out = args.pop("folder"), args.pop("json")
    plan = Plan(**args)
    with TemporaryDirectory(prefix="batchyard-chaos-") as tmp:
        where = folder or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        report = run(plan, where)
    print(report.text())
    if out is not None:
        out.write_text(json.dumps({"plan": vars(plan), "audit": vars(report.audit),
                                   "elapsed_s": report.elapsed_s, "events": report.events,
                                   "upstream": report.upstream, "webhook_ids": report.webhook_ids,
                                   "crashed": report.crashed, "passed": report.passed},
                                  indent=2, default=str))
    return 0 if report.passed else 1

