"""`genlab train KIND`: one sub-command per model kind, all on the shared engine (genlab/cli/training.py).

Each kind's command lives in its own module, loaded when it is asked for; the segmentation U-Net's two
(segmenter and img2img) are here."""

from __future__ import annotations

from typing import Any

import click

from genlab.cli import GenlabCommand, LazyGroup, cli
from genlab.cli.common import data_fields, data_options, train_options
from genlab.cli.training import report_training, run_training
from genlab.recipes import IMG2IMG_DEFAULTS, SEGMENTER_DEFAULTS


class TrainCommand(GenlabCommand):
    """A `genlab train KIND` command: the engine's ``run_dir`` is its --out."""

    def __init__(self, *args: Any, flags: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, flags={"run_dir": "--out", **(flags or {})}, **kwargs)


class TrainGroup(LazyGroup):
    command_class = TrainCommand


@cli.group(
    cls=TrainGroup,
    lazy={
        "classifier": "genlab.cli.train_classifier",
        "clip": "genlab.cli.clip",
        "diffusion": "genlab.cli.train_diffusion",
        "gan": "genlab.cli.train_gan",
        "vae": "genlab.cli.train_vae",
        "video": "genlab.cli.train_video",
    },
)
def train() -> None:
    """Train a model into a run directory (config.json, safetensors weights, metrics.jsonl, samples/).

    Every kind shares the engine: AdamW with warm-up + cosine LR, gradient clipping, EMA weights,
    seeded data order, Ctrl-C saves a checkpoint and --resume continues exactly; runs unchanged under
    `torchrun --nproc_per_node=N -m genlab train ...` (DDP, gloo on CPU, NCCL on GPU).
    """


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
