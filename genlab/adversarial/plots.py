"""Accuracy against epsilon, one line per attack."""

from __future__ import annotations

from pathlib import Path

from genlab.metrics.plots import _figure, _save


def plot_accuracy_vs_eps(report, path: str | Path) -> Path:
    plt, fig = _figure(5.0, 3.4)
    ax = fig.subplots()
    for name, row in report.table.items():
        eps = sorted(float(e) for e in row)
        ax.plot([0.0, *eps], [report.clean_accuracy, *(row[str(e)] for e in eps)], marker="o", label=name)
    ax.set_xlabel("epsilon (L-inf, pixel units)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)
