"""`genlab img2img`: apply a super-resolution or denoising U-Net (`genlab train img2img`) to an image."""

from __future__ import annotations

import click

from genlab.cli import cli
from genlab.cli.common import echo


@cli.command("img2img")
@click.argument("run", type=click.Path())
@click.argument("image", type=click.Path())
@click.option("--out", default="restored.png", show_default=True)
def img2img_cmd(run: str, image: str, out: str) -> None:
    """Enlarge (a super-resolution run: IMAGE is read at 1/factor of the training size) or denoise
    (IMAGE read at the training size) with the U-Net of RUN; writes input and output side by side.

    \b
    Example:
      genlab img2img runs/img2img-mnist small_digit.png --out sharp.png
    """
    import torch

    from genlab import rundir
    from genlab.data import load_image, save_grid
    from genlab.img2img.task import RestorationConfig, RestorationUNet, enlarge, restore
    from genlab.nn.pretrained import config_from_dict

    config = rundir.read_config(run, kind="img2img")
    restoration = config_from_dict(RestorationConfig, config.get("restoration", {}), f"{run}/config.json")
    model = RestorationUNet.from_pretrained(run)
    size = config["data"].get("image_size") or _trained_size(config)
    channels = model.config.in_channels
    if restoration.task == "superres":
        small = load_image(image, size // restoration.factor, channels)[None]
        given = enlarge(small, size)
    else:
        given = load_image(image, size, channels)[None]
    with torch.no_grad():
        result = restore(model, given).clamp(0, 1)
    path = save_grid(out, torch.cat([given, result]), ["input", "output"])
    echo(f"{restoration.task}: {path}")


def _trained_size(config: dict) -> int:
    from genlab.data import DataConfig, load_splits
    from genlab.nn.pretrained import config_from_dict

    data = config_from_dict(DataConfig, config["data"], "config.json 'data'")
    return int(load_splits(data.name, data.split_seed, data.val_fraction, None)[1].images.shape[-1])
