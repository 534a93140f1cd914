"""`genlab diffusion`: pictures of the diffusion process itself."""

from __future__ import annotations

import click

from genlab.cli import cli


@cli.group()
def diffusion() -> None:
    """Look at the forward (noising) process of diffusion models, and at how a run trained."""


@diffusion.command("noise")
@click.argument("image", required=False, type=click.Path())
@click.option(
    "--data", default="mnist", show_default=True, help="Data set to take the image from (no IMAGE)."
)
@click.option("--index", default=0, show_default=True, type=int, help="Which image of --data.")
@click.option(
    "--schedule", default="linear", show_default=True, type=click.Choice(["linear", "cosine", "sigmoid"])
)
@click.option("--timesteps", default=1000, show_default=True, type=int, help="T of the forward process.")
@click.option("--frames", default=8, show_default=True, type=int, help="How many timesteps to show.")
@click.option("--size", default=None, type=int, help="Resize IMAGE to this side.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", default="noise.png", show_default=True, help="PNG strip to write.")
def noise(
    image: str | None,
    data: str,
    index: int,
    schedule: str,
    timesteps: int,
    frames: int,
    size: int | None,
    seed: int,
    out: str,
) -> None:
    """Draw an image drowning in noise: x_t ~ q(x_t | x_0) at evenly spaced timesteps t.

    \b
    Examples:
      genlab diffusion noise photo.png --size 64 --out strip.png
      genlab diffusion noise --data shapes --index 3 --schedule cosine
    """
    import torch

    from genlab.data import load_dataset, load_image, save_grid
    from genlab.diffusion.pictures import noising_strip
    from genlab.diffusion.schedules import NoiseSchedule, ScheduleConfig
    from genlab.errors import GenlabError

    if frames < 2:
        raise GenlabError(f"--frames must be at least 2 (got {frames})")
    if image is not None:
        x = load_image(image, size=size)
    else:
        ds = load_dataset(data, "all", image_size=size)
        if not 0 <= index < len(ds):
            raise GenlabError(f"--index {index} is out of range: {data} has {len(ds)} images")
        x = ds.images[index]
    sched = NoiseSchedule(ScheduleConfig(kind=schedule, timesteps=timesteps))
    strip, captions = noising_strip(x, sched, frames, torch.Generator().manual_seed(seed))
    click.echo(f"{schedule} schedule, T={timesteps}: wrote {save_grid(out, strip, captions, nrow=frames)}")


@diffusion.command("plot")
@click.argument("run", type=click.Path())
@click.option("--out", default=None, help="PNG to write (default: RUN/diagnostics.png).")
def plot_cmd(run: str, out: str | None) -> None:
    """Draw a diffusion run's diagnostics: training and validation loss, FID with precision and recall,
    the share of samples recognised as the class asked for (or the prompt adherence of a text run), and
    the classes seen among the samples, at every evaluation.

    \b
    Example:
      genlab diffusion plot runs/diffusion-mnist
    """
    from genlab.errors import GenlabError
    from genlab.metrics.plots import plot_diffusion_run

    path = plot_diffusion_run(run, out)
    if path is None:
        raise GenlabError(f"{run} has no training records yet (metrics.jsonl): train it first")
    click.echo(f"diagnostics: {path}")
