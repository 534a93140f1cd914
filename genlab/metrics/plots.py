"""Plots of evaluation results as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from genlab.rundir import atomic_write_bytes


def _figure(width: float = 6.4, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: never needs a display
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=(width, height), dpi=110)


def _save(plt, fig, path: str | Path) -> Path:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def plot_sweep(
    sweep: list[dict[str, Any]], path: str | Path, metric: str = "fid", floor: float | None = None
) -> Path:
    """``metric`` against sampling steps (left) and model evaluations (right), one line per sampler;
    ``floor`` (real images scored the same way) as a dashed line."""
    plt, fig = _figure(9.6, 3.8)
    axes = fig.subplots(1, 2, sharey=True)
    for sampler in dict.fromkeys(row["sampler"] for row in sweep):
        rows = sorted((r for r in sweep if r["sampler"] == sampler), key=lambda r: r["steps"])
        ys = [r[metric] for r in rows]
        axes[0].plot([r["steps"] for r in rows], ys, marker="o", label=sampler)
        axes[1].plot([r["nfe"] for r in rows], ys, marker="o", label=sampler)
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for ax, key in zip(axes, ("steps", "nfe"), strict=True):
        ax.set_xscale("log")
        values = [r[key] for r in sweep]
        nice = [
            v for v in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if min(values) <= v <= 1.1 * max(values)
        ]
        ax.set_xticks(sorted(set(values)) if key == "steps" else nice)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    for ax, label in zip(axes, ("sampling steps", "model evaluations (NFE)"), strict=True):
        if floor is not None:
            ax.axhline(floor, color="k", ls="--", lw=1, label="real data (floor)")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(metric.upper())
    axes[1].legend(fontsize=8)
    return _save(plt, fig, path)


def plot_histogram(counts: list[int], names: list[str], path: str | Path, title: str) -> Path:
    """Bars of ``counts`` per class with the uniform share as a dashed line."""
    plt, fig = _figure(max(4.0, 0.45 * len(names) + 1.5), 3.2)
    ax = fig.subplots()
    ax.bar(range(len(counts)), counts, color="#4c72b0")
    ax.axhline(sum(counts) / max(1, len(counts)), color="k", ls="--", lw=1, label="uniform")
    ax.set_xticks(range(len(names)), names, rotation=45 if max(map(len, names)) > 3 else 0)
    ax.set_ylabel("samples")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def plot_training(records: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Training loss (and validation numbers when logged) against step, from a run's metrics.jsonl."""
    train = [r for r in records if r.get("event") == "train" and isinstance(r.get("loss"), float)]
    if not train:
        return None
    plt, fig = _figure()
    ax = fig.subplots()
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, label="training loss")
    evals = [r for r in records if r.get("event") == "eval"]
    keys = [k for k in ("val_loss",) if any(isinstance(r.get(k), float) for r in evals)]
    for key in keys:
        pts = [(r["step"], r[key]) for r in evals if isinstance(r.get(key), float) and math.isfinite(r[key])]
        ax.plot(*zip(*pts, strict=True), marker="o", label=key.replace("_", " "))
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)
