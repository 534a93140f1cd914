"""Accuracy against epsilon, one line per attack; certified accuracy against radius, one per report."""

from __future__ import annotations

from pathlib import Path

from genlab.metrics.plots import _figure, _save


def plot_accuracy_vs_eps(report, path: str | Path) -> Path:
    plt, fig = _figure(5.0, 3.4)
    ax = fig.subplots()
    for name, row in report.table.items():
        eps = sorted(float(e) for e in row)
        ax.plot([0.0, *eps], [report.clean_accuracy, *(row[str(e)] for e in eps)], marker="o", label=name)
    return _finish(plt, fig, ax, "epsilon (L-inf, pixel units)", "accuracy", path)


def plot_certified_accuracy(reports: dict[str, dict], path: str | Path) -> Path:
    """Certified accuracy against L2 radius, one line per `genlab defend certify` report ({label: report}),
    drawn from each image's label and radius on a fine grid of radii."""
    import torch

    from genlab.adversarial.smoothing import certified_accuracy

    plt, fig = _figure(5.0, 3.4)
    ax = fig.subplots()
    top = max(max(r["radii"], default=0.0) for r in reports.values()) * 1.1 or 1.0
    grid = tuple(top * i / 100 for i in range(101))
    for label, r in reports.items():
        labels, radii, truth = (torch.tensor(r[k]) for k in ("labels", "radii", "truth"))
        ax.plot(grid, certified_accuracy(labels, radii.double(), truth, grid), label=label)
    return _finish(plt, fig, ax, "L2 radius (pixel units)", "certified accuracy", path)


def _finish(plt, fig, ax, xlabel: str, ylabel: str, path: str | Path) -> Path:
    """An accuracy plot's axes (0 to 1), grid and legend, saved to ``path``."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)
