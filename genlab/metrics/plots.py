"""Plots of evaluation results as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from genlab.rundir import atomic_write_bytes, read_config, read_metrics


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


def plot_guidance(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """The fidelity-diversity curves of a guidance sweep (genlab.evaluation.guidance): fidelity against
    recall (left) and against FID (right), one line per kind of guidance, each point labelled with its
    scale (Dhariwal & Nichol 2021, Figure 4; Ho & Salimans 2022, Figure 2)."""
    plt, fig = _figure(9.6, 3.8)
    axes = fig.subplots(1, 2, sharey=True)
    names = {"cfg": "classifier-free", "classifier": "classifier", "clip": "CLIP"}
    for kind in dict.fromkeys(row["guidance"] for row in rows):
        mine = sorted(
            (r for r in rows if r["guidance"] == kind and "fidelity" in r), key=lambda r: r["scale"]
        )
        for ax, x in zip(axes, ("recall", "fid"), strict=True):
            points = [(r[x], r["fidelity"], r["scale"]) for r in mine if x in r]
            if not points:
                continue
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=names.get(kind, kind))
            for px, py, scale in points:
                ax.annotate(f"{scale:g}", (px, py), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes[0].set_xlabel("recall (diversity)")
    axes[1].set_xlabel("FID (lower is closer to the data)")
    axes[0].set_ylabel("fidelity (recognised / adherent share)")
    axes[0].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
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


def fid_panel(ax, evals: list[dict[str, Any]], model: str) -> None:
    """FID of each evaluation record (log scale) and, on a second axis, precision and recall (dashed)."""
    fid = [(r["step"], r["fid"]) for r in evals if isinstance(r.get("fid"), float)]
    if fid:
        ax.plot(*zip(*fid, strict=True), marker="o", lw=1)
        ax.set_yscale("log")
    ax.set_title(f"FID ({model})" if fid else "no FID (--features none)", fontsize=9)
    pr = [(r["step"], r["precision"], r["recall"]) for r in evals if "recall" in r]
    if pr:  # on a second axis: a collapse within classes shows as recall falling while FID may not
        ax_pr = ax.twinx()
        steps_pr, precision, recall = zip(*pr, strict=True)
        ax_pr.plot(steps_pr, precision, lw=1, ls="--", marker=".", color="tab:green", label="precision")
        ax_pr.plot(steps_pr, recall, lw=1, ls="--", marker=".", color="tab:red", label="recall")
        ax_pr.set_ylim(0, 1)
        ax_pr.tick_params(labelsize=7)
        ax_pr.legend(fontsize=7, loc="upper right")
        ax.set_title(f"FID ({model}, log), precision and recall (dashed)", fontsize=9)


def class_share_panel(ax, evals: list[dict[str, Any]], class_names: list[str] | None = None) -> None:
    """A heat map of the share of each class among the samples of every evaluation (mode collapse shows
    as classes fading out)."""
    hist = [(r["step"], r["class_histogram"]) for r in evals if r.get("class_histogram")]
    if hist:
        import numpy as np

        counts = np.array([h for _, h in hist], dtype=float)
        shares = counts / counts.sum(1, keepdims=True)
        image = ax.imshow(shares.T, aspect="auto", cmap="viridis", vmin=0, interpolation="nearest")
        ax.set_xticks(range(len(hist)), [str(s) for s, _ in hist], fontsize=6, rotation=90)
        names = class_names or [str(i) for i in range(shares.shape[1])]
        ax.set_yticks(range(shares.shape[1]), names[: shares.shape[1]], fontsize=6)
        ax.figure.colorbar(image, ax=ax, fraction=0.05)
    ax.set_title("share of each class among samples" if hist else "no class histogram", fontsize=9)


def plot_diffusion_training(
    records: list[dict[str, Any]], path: str | Path, class_names: list[str] | None = None
) -> Path | None:
    """A diffusion run's diagnostics from its metrics.jsonl: training and validation loss; FID with
    precision and recall; the share of samples recognised as the class asked for, or the prompt
    adherence (and its attributes) of a text run; the classes seen among the samples."""
    train = [r for r in records if r.get("event") == "train" and isinstance(r.get("loss"), float)]
    if not train:
        return None
    evals = [r for r in records if r.get("event") == "eval"]
    plt, fig = _figure(9.0, 6.0)
    (ax_loss, ax_fid), (ax_share, ax_hist) = fig.subplots(2, 2)
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, label="training loss")
    val = [(r["step"], r["val_loss"]) for r in evals if isinstance(r.get("val_loss"), float)]
    if val:
        ax_loss.plot(*zip(*val, strict=True), marker="o", label="validation loss")
    ax_loss.set_yscale("log")
    ax_loss.set_title("loss", fontsize=9)
    ax_loss.legend(fontsize=7)
    fid_panel(ax_fid, evals, "evaluated weights")
    labels = {
        "recognised": "recognised as the class asked for",
        "adherence": "prompt adherence (all)",
        "paraphrase_adherence": "held-out phrasings (all)",
    }
    shares = [k for k in labels if any(k in r for r in evals)]
    for key in shares:
        pts = [(r["step"], r[key]) for r in evals if key in r]
        ax_share.plot(*zip(*pts, strict=True), marker="o", lw=1.5, label=labels[key])
    parts = sorted({k for r in evals for k in r if k.startswith("adherence_")})
    for key in parts:
        pts = [(r["step"], r[key]) for r in evals if key in r]
        ax_share.plot(*zip(*pts, strict=True), lw=1, ls="--", label=key.removeprefix("adherence_"))
    ax_share.set_ylim(0, 1)
    ax_share.set_title("sample quality" if shares else "no sample scores (--eval-samples 0)", fontsize=9)
    if shares:
        ax_share.legend(fontsize=7)
    class_share_panel(ax_hist, evals, class_names)
    for ax in (ax_loss, ax_fid, ax_share, ax_hist):
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        if ax is not ax_hist:
            ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def plot_diffusion_run(run: str | Path, path: str | Path | None = None) -> Path | None:
    """``plot_diffusion_training`` of the diffusion run in ``run`` (its metrics.jsonl, its class names),
    into ``path`` (default: RUN/diagnostics.png); None while the run has no training records."""
    config = read_config(run, kind="diffusion")
    out = path or Path(run) / "diagnostics.png"
    return plot_diffusion_training(read_metrics(run), out, config.get("class_names"))
