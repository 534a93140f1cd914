"""The diagnostics of a GAN run in one picture, from its metrics.jsonl: both losses, D(x) and D(G(z)),
FID, and the share of each class among the samples at every evaluation (mode collapse shows as classes
fading out of the heat map)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genlab.errors import GenlabError
from genlab.metrics.plots import _figure, _save


def plot_gan_training(
    records: list[dict[str, Any]], path: str | Path, class_names: list[str] | None = None
) -> Path:
    train = [r for r in records if r.get("event") == "train" and "d_loss" in r]
    evals = [r for r in records if r.get("event") == "eval"]
    if not train:
        raise GenlabError("this run has no GAN training records yet (metrics.jsonl): train it first")
    plt, fig = _figure(9.0, 6.0)
    (ax_loss, ax_d), (ax_fid, ax_hist) = fig.subplots(2, 2)
    steps = [r["step"] for r in train]
    ax_loss.plot(steps, [r["d_loss"] for r in train], lw=1, label="D loss")
    ax_loss.plot(steps, [r["g_loss"] for r in train], lw=1, label="G loss")
    ax_loss.set_title("losses", fontsize=9)
    ax_loss.legend(fontsize=7)
    ax_d.plot(steps, [r["d_real"] for r in train], lw=1, label="D(x), real")
    ax_d.plot(steps, [r["d_fake"] for r in train], lw=1, label="D(G(z)), generated")
    ax_d.set_title("discriminator outputs (probabilities, or critic scores)", fontsize=9)
    ax_d.legend(fontsize=7)
    fid = [(r["step"], r["fid"]) for r in evals if isinstance(r.get("fid"), float)]
    if fid:
        ax_fid.plot(*zip(*fid, strict=True), marker="o", lw=1)
        ax_fid.set_yscale("log")
    ax_fid.set_title("FID (EMA generator)" if fid else "no FID (--features none)", fontsize=9)
    pr = [(r["step"], r["precision"], r["recall"]) for r in evals if "recall" in r]
    if pr:  # on a second axis: a collapse within classes shows as recall falling while FID may not
        ax_pr = ax_fid.twinx()
        steps_pr, precision, recall = zip(*pr, strict=True)
        ax_pr.plot(steps_pr, precision, lw=1, ls="--", color="tab:green", label="precision")
        ax_pr.plot(steps_pr, recall, lw=1, ls="--", color="tab:red", label="recall")
        ax_pr.set_ylim(0, 1)
        ax_pr.tick_params(labelsize=7)
        ax_pr.legend(fontsize=7, loc="upper right")
        ax_fid.set_title("FID (EMA generator, log), precision and recall (dashed)", fontsize=9)
    hist = [(r["step"], r["class_histogram"]) for r in evals if r.get("class_histogram")]
    if hist:
        import numpy as np

        counts = np.array([h for _, h in hist], dtype=float)
        shares = counts / counts.sum(1, keepdims=True)
        image = ax_hist.imshow(shares.T, aspect="auto", cmap="viridis", vmin=0, interpolation="nearest")
        ax_hist.set_xticks(range(len(hist)), [str(s) for s, _ in hist], fontsize=6, rotation=90)
        names = class_names or [str(i) for i in range(shares.shape[1])]
        ax_hist.set_yticks(range(shares.shape[1]), names[: shares.shape[1]], fontsize=6)
        fig.colorbar(image, ax=ax_hist, fraction=0.05)
    ax_hist.set_title("share of each class among samples" if hist else "no class histogram", fontsize=9)
    for ax in (ax_loss, ax_d, ax_fid, ax_hist):
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    return _save(plt, fig, path)
