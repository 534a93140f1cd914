"""The diagnostics of a GAN run in one picture, from its metrics.jsonl: both losses, D(x) and D(G(z)),
FID, and the share of each class among the samples at every evaluation (mode collapse shows as classes
fading out of the heat map)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genlab import rundir
from genlab.errors import GenlabError
from genlab.metrics.plots import _figure, _save, class_share_panel, fid_panel

DIAGNOSTICS_FILE = "diagnostics.png"


def plot_run(run: str | Path, path: str | Path | None = None) -> Path:
    """Draw the diagnostics of the GAN run in ``run`` (its metrics.jsonl, its class names) into ``path``
    (default: RUN/diagnostics.png); returns the picture's path."""
    config = rundir.read_config(run, kind="gan")
    out = path or Path(run) / DIAGNOSTICS_FILE
    return plot_gan_training(rundir.read_metrics(run), out, config.get("class_names"))


def plot_gan_training(
    records: list[dict[str, Any]], path: str | Path, class_names: list[str] | None = None
) -> Path:
    """Four panels from a run's records: both losses, D(x) and D(G(z)), FID, and the class shares of the
    samples at every evaluation."""
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
    fid_panel(ax_fid, evals, "EMA generator")
    class_share_panel(ax_hist, evals, class_names)
    for ax in (ax_loss, ax_d, ax_fid, ax_hist):
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    return _save(plt, fig, path)
