"""`genlab train video`: text-, class- or frame-conditional video diffusion on clips."""

from __future__ import annotations

from typing import Any

import click

from genlab.cli.common import (
    SAMPLER_NAMES,
    echo,
    noise_level_options,
    number_list,
    snr_floor_option,
    tokenizer_option,
    train_options,
)
from genlab.cli.train import train
from genlab.cli.training import report_training, run_training
from genlab.recipes import VIDEO_DEFAULTS

VIDEO_REPORT = {
    "val_loss": "validation loss",
    "direction_probe": "direction probe (loss with the directions turned around / true; 1: not used)",
    "frame_probe": "frame probe (loss given another clip's first frame / its own; 1: not used)",
    "adherence": "held-out prompts with direction, colour and shape right (read from the pixels)",
    "adherence_all": "held-out prompts with everything right",
}
VIDEO_FLAGS = {
    "width": "--dit-width",
    "depth": "--dit-depth",
    "heads": "--dit-heads",
    "sample_sampler": "--eval-sampler",
    "samples": "--eval-samples",
    "name": "--data",
}


@train.command("video", flags=VIDEO_FLAGS)
@click.option("--data", default="moving-shapes", show_default=True, help="moving-shapes or moving-mnist.")
@click.option(
    "--split-seed", default=0, show_default=True, type=int, help="Seed of the train/validation split."
)
@click.option(
    "--val-fraction", default=0.1, show_default=True, type=float, help="Share of the clips held out."
)
@click.option(
    "--cond",
    default="text",
    show_default=True,
    type=click.Choice(["none", "class", "text"]),
    help="Conditioning: the captions (a text encoder and cross-attention), class labels, or none.",
)
@click.option(
    "--text-encoder",
    default="joint",
    show_default=True,
    help="With --cond text: 'joint' (trained with the denoiser), 'clip:RUN' (a frozen CLIP text tower) or "
    "'minilm' (frozen pretrained MiniLM).",
)
@tokenizer_option("With --text-encoder joint. ")
@click.option(
    "--cond-dropout", default=0.1, show_default=True, type=float, help="Share trained unconditional."
)
@click.option(
    "--frame-cond",
    default=0.0,
    show_default=True,
    type=float,
    help="Share of training clips given their first frame (image-to-video: sample with --first-frame); "
    "with --past-frames, the share scored on a later frame given the ones before it. Evaluations then "
    "report the frame probe.",
)
@click.option(
    "--factorized",
    is_flag=True,
    help="Draw text-to-video in two stages (Emu Video): a first frame from the prompt, then the clip "
    "continuing it; needs --frame-cond.",
)
@click.option(
    "--image-share",
    default=0.0,
    show_default=True,
    type=float,
    help="Joint image and video training: share of clips shown as independent images (temporal layers off).",
)
@click.option(
    "--noise-correlation",
    default=0.0,
    show_default=True,
    type=float,
    help="Correlation of the noise of every two frames (PYoCo's mixed noise): motion gets more of the "
    "signal.",
)
@click.option(
    "--temporal/--no-temporal",
    default=True,
    help="--no-temporal: no temporal layers, every frame denoised alone (the ablation).",
)
@click.option(
    "--temporal-levels", default="1,2", show_default=True, help="U-Net levels with temporal attention."
)
@click.option(
    "--min-snr-gamma", default=5.0, show_default=True, type=float, help="Min-SNR-gamma weighting; 0: MSE."
)
@snr_floor_option
@click.option(
    "--parameterization", default="eps", show_default=True, type=click.Choice(["eps", "v", "x0", "edm"])
)
@noise_level_options
@click.option(
    "--stack-frames",
    default=0,
    type=int,
    help="Frames stacked as channels (0: factorised); use it with --parameterization x0, as its narrow "
    "U-Net cannot carry every frame's noise through (docs/video.md).",
)
@click.option(
    "--past-frames",
    default=0,
    type=int,
    help="Autoregressive (MCVD): draw each frame given up to this many before it, as input planes; "
    "--frame-cond is the share of training clips scored on a later frame (0: a whole clip at once).",
)
@click.option(
    "--past-noise",
    default=0.0,
    show_default=True,
    type=float,
    help="With --past-frames: train on past frames with Gaussian noise of a deviation up to this "
    "(GameNGen's noise augmentation, against drift); sampling shows clean ones.",
)
@click.option(
    "--past-guidance",
    is_flag=True,
    help="With --past-frames: guidance's unconditional side has no past frames either, so it also pushes "
    "each frame to continue the ones before it (the run's default; genlab sample can override it).",
)
@click.option(
    "--frame-channels",
    default=0,
    type=int,
    help="With --stack-frames: a full-size level of this many channels on every frame alone, the frames "
    "stacked at half size (0: stacked at full size).",
)
@click.option(
    "--frame-downsample/--no-frame-downsample",
    default=True,
    help="With --frame-channels: stack the frames at half size after their own level, or stack them at "
    "full size with the per-frame level around the stack.",
)
@click.option(
    "--temporal-conv/--no-temporal-conv",
    default=False,
    show_default=True,
    help="3-D convs after each temporal attention.",
)
@click.option("--base-channels", default=16, show_default=True, type=int, help="U-Net width at full size.")
@click.option("--channel-mults", default="1,4,4", show_default=True, help="Width multiplier of each level.")
@click.option(
    "--attention-levels", default="2", show_default=True, help="Levels with spatial self-attention."
)
@click.option(
    "--backbone",
    default="unet",
    show_default=True,
    type=click.Choice(["unet", "dit"]),
    help="The factorised space-time U-Net (Ho et al. 2022) or a transformer on spacetime patches (Sora).",
)
@click.option("--tubelet", default=2, show_default=True, type=int, help="DiT: frames in a spacetime patch.")
@click.option("--patch-size", default=4, show_default=True, type=int, help="DiT: pixels on a patch's side.")
@click.option("--dit-width", default=128, show_default=True, type=int, help="DiT: token width.")
@click.option("--dit-depth", default=4, show_default=True, type=int, help="DiT: transformer blocks.")
@click.option("--dit-heads", default=4, show_default=True, type=int, help="DiT: attention heads.")
@click.option("--eval-sampler", default="ddpm", show_default=True, type=click.Choice(SAMPLER_NAMES))
@click.option(
    "--sample-steps", default=20, show_default=True, type=int, help="Sampling steps during training."
)
@click.option(
    "--guidance", default=3.0, show_default=True, type=float, help="Guidance scale during training."
)
@click.option(
    "--eval-samples",
    default=100,
    show_default=True,
    type=int,
    help="Clips each evaluation draws for held-out prompts and reads back (moving-shapes, text); 0: none.",
)
@train_options(**VIDEO_DEFAULTS)
@click.pass_context
def train_video(ctx: click.Context, **params: Any) -> None:
    """Train a video diffusion model: a factorised space-time U-Net (2-D layers per frame, temporal
    attention across frames; Ho et al. 2022) or a DiT on spacetime patches, on clips.

    Frame strips and GIFs are drawn into RUN/samples; every evaluation draws --eval-samples clips for
    held-out prompts and reads their colour, shape and motion back from the pixels. Sample afterwards
    with `genlab sample RUN "a red circle moving right" --frames 16 --out clip.gif`.

    \b
    Examples:
      genlab train video --data moving-shapes --cond text --minutes 20
      genlab train video --data moving-shapes --cond text --no-temporal      # the ablation
      genlab train video --data moving-mnist --cond class
      genlab train video --data moving-shapes --frame-cond 0.3 --image-share 0.1
      genlab train video --backbone dit --tubelet 2 --patch-size 4
      genlab train clip --data moving-shapes --steps 150 --out runs/clip-clips  # the recipe, two commands:
      genlab train video --text-encoder clip:runs/clip-clips --past-frames 2 --frame-cond 0.85 \\
          --past-guidance --batch-size 32 --ema-decay 0 --steps 8000 --minutes 19.8 --eval-every 0
    """
    from genlab.data import DataConfig
    from genlab.diffusion.config import DiffusionConfig
    from genlab.video.config import VideoConfig
    from genlab.video.task import VideoDiffusionTask

    def build(cfg: Any) -> VideoDiffusionTask:
        diffusion = DiffusionConfig(
            cond=params["cond"],
            cond_dropout=params["cond_dropout"],
            min_snr_gamma=params["min_snr_gamma"],
            snr_floor=params["snr_floor"],
            parameterization=params["parameterization"],
            noise_levels=params["noise_levels"],
            p_mean=params["p_mean"],
            p_std=params["p_std"],
            backbone=params["backbone"],
            sample_steps=params["sample_steps"],
            sample_sampler=params["eval_sampler"],
            sample_guidance=params["guidance"],
        )
        video = VideoConfig(
            image_share=params["image_share"],
            frame_cond=params["frame_cond"],
            noise_correlation=params["noise_correlation"],
            factorized=params["factorized"],
            past_noise=params["past_noise"],
            past_guidance=params["past_guidance"],
        )
        return VideoDiffusionTask(
            DataConfig(params["data"], params["split_seed"], params["val_fraction"]),
            diffusion,
            video,
            text_encoder=params["text_encoder"],
            text_options=dict(tokenizer=params["tokenizer"]),
            samples=params["eval_samples"],
            log=echo,
            base_channels=params["base_channels"],
            channel_mults=number_list(params["channel_mults"], "--channel-mults"),
            attention_levels=number_list(params["attention_levels"], "--attention-levels"),
            coordinates=True,
            temporal=params["temporal"],
            stack_frames=params["stack_frames"],
            past_frames=params["past_frames"],
            frame_channels=params["frame_channels"],
            frame_downsample=params["frame_downsample"],
            temporal_conv=params["temporal_conv"],
            temporal_levels=number_list(params["temporal_levels"], "--temporal-levels"),
            dit_options=dict(
                tubelet=params["tubelet"],
                patch_size=params["patch_size"],
                width=params["dit_width"],
                depth=params["dit_depth"],
                heads=params["dit_heads"],
            ),
        )

    def rebuild(config: dict[str, Any]) -> VideoDiffusionTask:
        return VideoDiffusionTask.from_run_config(config, log=echo)

    result = run_training(ctx, params, "video", build, rebuild)
    report_training(result, VIDEO_REPORT)
    what = {"text": '"a small red circle moving right" ', "class": "--class all "}.get(params["cond"], "")
    echo(f"sample it: genlab sample {result.run_dir} {what}--frames 16 --out clip.gif")
