"""``batchyard report --plot``: spend per period, one line per model (matplotlib, Agg)."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from pathlib import Path

from batchyard.report_cli import require_matplotlib
from storage.reports import SpendRow

__all__ = ["plot_spend"]


def plot_spend(rows: list[SpendRow], path: Path) -> None:
    """Write a PNG of spend (USD) over the report's periods, a line per model."""
    matplotlib = require_matplotlib()
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    periods = sorted({r.period for r in rows})
    by_model: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for r in rows:
        by_model[r.model][r.period] += r.cost
    fig, ax = plt.subplots(figsize=(10, 5))
    for model, spent in sorted(by_model.items()):
        ax.plot(periods, [float(spent.get(p, Decimal(0))) for p in periods], marker="o",
                label=model)
    ax.set_title("spend per model")
    ax.set_xlabel("period (UTC)")
    ax.set_ylabel("USD")
    ax.grid(alpha=0.3)
    if by_model:
        ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
