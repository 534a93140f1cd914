"""`genlab train gan`: GANs from the original game to DCGAN and WGAN-GP, on the shared engine, and the
best of N seeds. The `genlab gan ...` demonstrations are genlab.cli.gan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from genlab.cli.common import (
    MONITOR_FLAGS,
    data_fields,
    data_options,
    echo,
    is_main_process,
    monitor_options,
    train_options,
)
from genlab.cli.gan import GAN_LOSSES
from genlab.cli.train import train
from genlab.cli.training import choose_run_dir, report_training, run_training
from genlab.recipes import GAN_DEFAULTS

# the options that set GameConfig's and GANConfig's fields (and --d-norm, when given)
GAME_OPTIONS = ("loss", "d_steps", "gp_weight", "d_lr_ratio", "r1", "mode_seeking", "augment")
MODEL_OPTIONS = ("arch", "z_dim", "width", "dropout", "pack", "minibatch_std", "spectral_norm", "clusters")


@train.command("gan", flags=MONITOR_FLAGS, context_settings={"show_default": True})
@data_options
@click.option("--arch", default="dcgan", type=click.Choice(["mlp", "dcgan", "cgan"]))
@click.option(
    "--loss",
    default="ns",
    type=click.Choice(GAN_LOSSES),
    help="ns: non-saturating -log D(G(z)); minimax: log(1 - D(G(z))); wgan-gp; hinge.",
)
@click.option("--d-steps", default=0, help="D steps per G step (0: 5 for wgan-gp, else 1).")
@click.option("--gp-weight", default=10.0, help="WGAN-GP's lambda.")
@click.option(
    "--r1",
    default=0.0,
    help="gamma of the R1 penalty gamma/2 ||grad D(x)||^2 on real images (Mescheder et al. 2018); "
    "makes D's norm default to none.",
)
@click.option(
    "--mode-seeking",
    default=0.0,
    help="Weight of the mode-seeking term (Mao et al. 2019) in G's loss: two latents of one class or "
    "cluster must give two different images.",
)
@click.option("--d-lr-ratio", default=1.0, help="D's learning rate / G's.")
@click.option(
    "--augment",
    default="none",
    help="DiffAugment (Zhao et al. 2020) of every D input, real and generated alike: a comma list of "
    "translation, cutout, color; keeps D from memorising a small data set.",
)
@click.option("--z-dim", default=100, help="Size of the latent z.")
@click.option("--width", default=64, help="Channels of D's first conv layer.")
@click.option(
    "--d-norm",
    default=None,
    type=click.Choice(["batch", "layer", "none"]),
    help="Normalisation in D (default: batch; layer for wgan-gp and none with --r1, whose penalties are "
    "per sample).",
)
@click.option("--dropout", default=0.0, help="Dropout in D.")
@click.option(
    "--pack",
    default=1,
    help="PacGAN (Lin et al. 2018): D judges groups of N samples at once, which penalises mode collapse.",
)
@click.option(
    "--spectral-norm", is_flag=True, help="Spectral normalisation of every D layer (Miyato et al. 2018)."
)
@click.option(
    "--minibatch-std", is_flag=True, help="Give the DCGAN D the batch's feature spread (Karras et al. 2018)."
)
@click.option(
    "--clusters",
    default=0,
    help="Self-conditioning (Liu et al. 2020): condition G and D on the k-means cluster of each training "
    "image (no labels used); samples draw clusters by their sizes. Against mode dropping (0: off).",
)
@monitor_options(samples=500)
@click.option(
    "--restarts",
    default=1,
    help="Train N runs (seeds seed..seed+N-1, each as long as asked) and keep the one of best final FID.",
)
@train_options(**GAN_DEFAULTS)
@click.pass_context
def train_gan(ctx: click.Context, **params: Any) -> None:
    """Train a GAN (Goodfellow et al. 2014) on the shared engine: k D steps per G step, an EMA of G,
    and every --eval-every steps the FID and the histogram of generated classes (mode collapse shows as
    classes dropping out); D(x), D(G(z)) and both losses go to metrics.jsonl.

    \b
    Examples:
      genlab train gan --data mnist --arch dcgan --minutes 20
      genlab train gan --data mnist --arch cgan --loss hinge --steps 2000
      genlab train gan --clusters 50 --mode-seeking 0.1 --loss hinge --spectral-norm --d-norm none
      genlab train gan --data mnist --arch mlp --loss minimax --steps 3000   # watch it saturate
      genlab train gan --data shapes --loss wgan-gp --minutes 15
      genlab train gan --data digits --restarts 3 --steps 1500
      genlab train gan --out runs/gan-mnist --resume --steps 6000
    """
    from genlab.data import DataConfig
    from genlab.gan.models import check_pack
    from genlab.gan.restarts import best_of_restarts, check_restarts
    from genlab.gan.task import GameConfig, GANTask, MonitorConfig

    restarts = params["restarts"]
    check_restarts(restarts, params["resume"], params["features"])

    def build(cfg: Any) -> GANTask:
        check_pack(params["pack"], cfg.batch_size)
        data = DataConfig(**data_fields(params))
        game = GameConfig(**{k: params[k] for k in GAME_OPTIONS})
        model = {k: params[k] for k in MODEL_OPTIONS}
        if params["d_norm"] is not None:  # else the loss's default (GANTask)
            model["d_norm"] = params["d_norm"]
        monitor = MonitorConfig(params["eval_samples"], params["features"])
        return GANTask(data, game, monitor=monitor, log=echo, **model)

    def rebuild(config: dict[str, Any]) -> GANTask:
        return GANTask.from_run_config(config, log=echo)

    def train_one(seed: int, out: Path):
        return run_training(ctx, dict(params, seed=seed, out=str(out)), "gan", build, rebuild)

    if restarts == 1:
        result = run_training(ctx, params, "gan", build, rebuild)
        report_training(result, {"fid": "FID (evaluation features)", "modes_covered": "classes covered"})
    else:
        out = choose_run_dir(params["out"], False, "gan", params["data"])
        result = best_of_restarts(train_one, out, params["seed"], restarts, log=echo)
    if is_main_process():
        from genlab.gan.plots import plot_run

        echo(f"diagnostics (losses, D(x), D(G(z)), FID, class shares): {plot_run(result.run_dir)}")
        echo(f"sample it: genlab sample {result.run_dir} --n 64 --out gan.png")
