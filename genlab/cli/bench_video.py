"""`genlab bench video`: what a clip costs, the video U-Net against the image U-Net of the same width."""

from __future__ import annotations

import shlex
import sys
from datetime import datetime, timezone

import click

from genlab.cli.bench import bench
from genlab.cli.common import echo


def recipe_config(frames: int, past_frames: int = 0):
    """The video U-Net that `genlab train video --data moving-shapes --cond text` builds: its defaults
    (with ``past_frames``: the autoregressive one, `--past-frames`)."""
    from genlab.cli.common import number_list
    from genlab.cli.train_video import train_video
    from genlab.diffusion.task import TEXT_DEFAULTS
    from genlab.nn.unet import UNetConfig
    from genlab.nn.video_unet import VideoUNetConfig

    d = {p.name: p.default for p in train_video.params}
    unet = UNetConfig(
        in_channels=3,
        image_size=32,
        base_channels=d["base_channels"],
        channel_mults=number_list(d["channel_mults"], "--channel-mults"),
        attention_levels=number_list(d["attention_levels"], "--attention-levels"),
        coordinates=True,
        context_dim=TEXT_DEFAULTS["width"],
    )
    levels = number_list(d["temporal_levels"], "--temporal-levels")
    return VideoUNetConfig(
        unet=unet, max_frames=max(64, frames), temporal_levels=levels, past_frames=past_frames
    )


@bench.command("video")
@click.option("--frames", default=8, show_default=True, type=int, help="Frames per clip.")
@click.option("--clips", default=16, show_default=True, type=int, help="Clips per batch.")
@click.option("--repeats", default=5, show_default=True, type=int, help="Interleaved timed rounds.")
@click.option("--warmup", default=1, show_default=True, type=int, help="Untimed calls of each model first.")
@click.option("--threads", default=0, show_default=True, type=int, help="torch threads (0: all cores).")
@click.option("--precision", default="auto", show_default=True, type=click.Choice(["auto", "bf16", "fp32"]))
@click.option(
    "--past-frames",
    default=0,
    show_default=True,
    type=int,
    help="Bench the autoregressive U-Net (`genlab train video --past-frames`) instead of the factorised one.",
)
@click.option(
    "--out",
    default="bench/results/video-cpu.json",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Results JSON to write.",
)
def bench_video(frames, clips, repeats, warmup, threads, precision, past_frames, out) -> None:
    """Time and memory per clip of the text-to-video U-Net of `genlab train video` and of the image U-Net
    of the same width making the same frames as independent images: parameters, FLOPs, a guided sampling
    step, a training step and its peak memory, timed interleaved in this process.

    \b
    Examples:
      genlab bench video                     # writes bench/results/video-cpu.json
      genlab bench video --frames 16 --clips 4 --repeats 2 --out /tmp/video.json
      genlab bench video --past-frames 2 --out bench/results/video-autoregressive-cpu.json
    """
    from genlab import rundir
    from genlab.bench.video import VideoBenchSettings, format_video_table, run_video_bench
    from genlab.checks import MAX_FRAMES, check_range

    check_range("frames", frames, 2, MAX_FRAMES)
    check_range("clips", clips, 2, 256)
    check_range("repeats", repeats, 1, 100)
    check_range("warmup", warmup, 0, 100)
    check_range("threads", threads, 0, 1024)
    check_range("past_frames", past_frames, 0, frames - 1)
    settings = VideoBenchSettings(frames, clips, repeats, warmup, threads, precision)
    result = run_video_bench(recipe_config(frames, past_frames), settings)
    result["command"] = shlex.join(["genlab", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else None
    result["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    echo(format_video_table(result))
    rundir.atomic_write_json(out, result)
    echo(f"results: {out}")
