"""`genlab train vae`: the autoencoder of latent diffusion, and its latent scale factor."""

from __future__ import annotations

from typing import Any

import click

from genlab.cli.common import data_fields, data_options, echo, is_main_process, train_options
from genlab.cli.train import train
from genlab.cli.training import report_training, run_training
from genlab.recipes import VAE_DEFAULTS


@train.command("vae")
@data_options
@click.option("--latent-channels", default=4, show_default=True, type=int, help="Channels of the latent map.")
@click.option(
    "--downsample",
    default=4,
    show_default=True,
    type=click.Choice(["2", "4", "8"]),
    help="f: the latent's side is the image's divided by f.",
)
@click.option("--base-channels", default=32, show_default=True, type=int, help="Width at full size.")
@click.option(
    "--reconstruction", default="l1", show_default=True, type=click.Choice(["l1", "mse"]), help="Pixel loss."
)
@click.option(
    "--kl-weight",
    default=1e-3,
    show_default=True,
    type=float,
    help="Weight of KL(q(z|x) || N(0, I)) per pixel; small keeps detail (Rombach et al. use 1e-6).",
)
@click.option(
    "--perceptual",
    default=None,
    metavar="CLASSIFIER_RUN",
    help="Also match this genlab classifier's features of the image (a perceptual loss).",
)
@click.option("--perceptual-weight", default=0.1, show_default=True, type=float)
@train_options(**VAE_DEFAULTS)
@click.pass_context
def train_vae(ctx: click.Context, **params: Any) -> None:
    """Train the KL-regularised autoencoder of latent diffusion (Rombach et al. 2022).

    Writes RUN/latent.json with the latent scale factor (1 / the standard deviation of the latents
    over the training set) that `genlab train diffusion --latent RUN` multiplies latents by.

    \b
    Examples:
      genlab train vae --data mnist                       # 28x28 -> 4x7x7 latents
      genlab train vae --data shapes --downsample 8 --latent-channels 8
      genlab train vae --data mnist --perceptual runs/classifier-mnist
    """
    from genlab.data import DataConfig
    from genlab.latent.task import VAELossConfig, VAETask, write_scale_factor

    def build(cfg: Any) -> VAETask:
        loss = VAELossConfig(
            params["reconstruction"],
            params["kl_weight"],
            params["perceptual"] or "",
            params["perceptual_weight"],
        )
        return VAETask(
            DataConfig(**data_fields(params)),
            loss,
            latent_channels=params["latent_channels"],
            downsample=int(params["downsample"]),
            base_channels=params["base_channels"],
        )

    result = run_training(ctx, params, "vae", build, VAETask.from_run_config)
    report_training(result, {"val_psnr": "validation PSNR (dB)", "val_kl": "KL per pixel"})
    if is_main_process():  # one process writes RUN/latent.json
        stats, data = write_scale_factor(result.run_dir)
        echo(f"latent scale factor {stats['scale_factor']:.4f}, latents {tuple(stats['latent_shape'])}")
        echo(f"train on its latents: genlab train diffusion --latent {result.run_dir} --data {data.name}")
