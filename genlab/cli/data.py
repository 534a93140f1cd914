"""`genlab data`: see what data sets there are and look at them."""

from __future__ import annotations

import click

from genlab.cli import LazyGroup, cli


@cli.group(cls=LazyGroup, lazy={"floor": "genlab.cli.evaluate"})
def data() -> None:
    """List and look at the data sets (mnist, digits, shapes, folder:PATH)."""


@data.command("list")
def data_list() -> None:
    """List the built-in data sets with their size, channels, classes and number of images."""
    from genlab.data import list_datasets

    infos = list_datasets()
    width = max(14, *(len(info.name) + 2 for info in infos))
    click.echo(f"{'name':<{width}}{'images':>8}{'size':>7}{'chan':>6}{'classes':>9}  description")
    for info in infos:
        click.echo(
            f"{info.name:<{width}}{info.size:>8}{info.image_size:>7}{info.channels:>6}{info.num_classes:>9}  "
            f"{info.description}"
        )


@data.command("show")
@click.argument("name")
@click.option("--out", default=None, help="PNG to write (default: NAME.png).")
@click.option("--n", default=32, show_default=True, type=int, help="How many images.")
@click.option("--split", default="train", show_default=True, type=click.Choice(["train", "val", "all"]))
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the train/validation split.")
@click.option("--image-size", default=None, type=int, help="Resize to this side (folder data: default 32).")
@click.option("--nrow", default=8, show_default=True, type=int, help="Images per row.")
def data_show(
    name: str, out: str | None, n: int, split: str, seed: int, image_size: int | None, nrow: int
) -> None:
    """Write a captioned grid of N images spread evenly over a data set.

    \b
    Examples:
      genlab data show mnist --out mnist.png
      genlab data show shapes --n 16 --split val
      genlab data show folder:./my_images --image-size 64
      genlab data show moving-shapes --n 8 --out clips.gif    # clips: a GIF, or a PNG of their frames
      genlab data show clips:./my_clips                        # animated GIFs or frame folders
    """
    from genlab.data import is_clips, load_dataset, save_grid
    from genlab.errors import GenlabError

    if n < 1:
        raise GenlabError(f"--n must be at least 1 (got {n})")
    if is_clips(name):
        _show_clips(name, out, n, split, seed, nrow)
        return
    ds = load_dataset(name, split, seed=seed, image_size=image_size)
    preview = ds.spread(n)
    k = len(preview)
    out = out or f"{_stem(name)}.png"
    path = save_grid(out, preview.images, preview.captions, nrow=min(nrow, k))
    click.echo(
        f"{ds.name} ({split}: {len(ds)} images, {ds.channels}x{ds.image_size}x{ds.image_size}): "
        f"wrote {k} to {path}"
    )


def _stem(name: str) -> str:
    """The default file name of a data set's preview: "folder:~/my_clips/" -> "my_clips"."""
    return name.split(":", 1)[-1].rstrip("/").split("/")[-1] or "data"


def _show_clips(name: str, out: str | None, n: int, split: str, seed: int, nrow: int) -> None:
    """A clip data set: an animated GIF of N clips side by side, or a PNG with one row of frames per clip."""
    from genlab.data import load_clips, save_clips

    ds = load_clips(name, split, seed=seed).spread(n)
    path = save_clips(out or f"{_stem(name)}.gif", ds.clips, ds.captions, nrow=nrow)
    click.echo(f"{name} ({split}): wrote {len(ds)} clips of {ds.frames} frames to {path}")
