"""`genlab segment`: cell masks for images of any size with a trained segmentation U-Net."""

from __future__ import annotations

from pathlib import Path

import click

from genlab.cli import cli
from genlab.cli.common import echo
from genlab.errors import GenlabError


@cli.command("segment")
@click.argument("run", type=click.Path())
@click.argument("image", type=click.Path())
@click.option(
    "--out", default="mask.png", show_default=True, help="The mask (white: cell); an overlay beside it."
)
@click.option(
    "--tile", default=64, show_default=True, type=int, help="Output tile side of overlap-tile prediction."
)
def segment(run: str, image: str, out: str, tile: int) -> None:
    """Segment IMAGE (any size; read as gray) with the U-Net of RUN by overlap-tile prediction with
    mirrored borders; writes the mask and OUT_overlay.png, the cells tinted over the image.

    \b
    Example:
      genlab segment runs/segmenter-cells cells.png --out mask.png
    """
    from genlab.data import load_image
    from genlab.nn.seg_unet import SegUNet
    from genlab.segmentation.task import overlay
    from genlab.segmentation.tiling import predict_tiled

    if tile < 1:
        raise GenlabError(f"--tile must be at least 1 (got {tile})")
    model = SegUNet.from_pretrained(run)
    x = load_image(image, None, model.config.in_channels)
    mask = predict_tiled(model, x, tile).argmax(0)
    path = _write_png(out, mask[None].float())
    picture = _write_png(Path(out).with_name(Path(out).stem + "_overlay.png"), overlay(x[:1], mask))
    share = float(mask.float().mean())
    echo(f"{x.shape[-2]}x{x.shape[-1]} image, {share:.1%} cell pixels: {path}, overlay {picture}")


def _write_png(path: str | Path, image) -> Path:
    """One (C, H, W) image in [0, 1] as a PNG of its own size, written atomically."""
    import io

    from genlab.pipelines.diffusion import tensor_to_pil
    from genlab.rundir import atomic_write_bytes

    buffer = io.BytesIO()
    tensor_to_pil(image[None])[0].save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())
