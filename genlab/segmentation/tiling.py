"""Overlap-tile prediction (Ronneberger et al. 2015, figure 2): the image is cut into output tiles, each
predicted from an input window larger by the context the valid convolutions consume; beyond the image's
border that context is its mirror image. Any image size, with memory bounded by the tile."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genlab.nn.seg_unet import fit_input, output_size


@torch.no_grad()
def predict_tiled(model: nn.Module, image: torch.Tensor, tile: int = 64) -> torch.Tensor:
    """Class logits (K, H, W) for ``image`` (C, H, W), predicted in output tiles of >= ``tile`` pixels."""
    depth = model.config.depth
    window = fit_input(tile, depth)
    out = output_size(window, depth)
    margin = (window - out) // 2
    _, h, w = image.shape
    rows, cols = -(-h // out), -(-w // out)
    # mirror by the margin on every side, and more at the bottom and right to complete the last tiles
    padded = mirror_pad(image[None], margin, margin + rows * out - h, margin, margin + cols * out - w)
    logits = torch.empty(model.config.num_classes, rows * out, cols * out)
    device = next(model.parameters()).device
    for i in range(rows):
        for j in range(cols):
            crop = padded[..., i * out : i * out + window, j * out : j * out + window]
            logits[:, i * out : (i + 1) * out, j * out : (j + 1) * out] = model(crop.to(device))[0].cpu()
    return logits[:, :h, :w]


def mirror_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Reflect-pad, repeatedly when the pad is larger than the image (reflection allows less than a side)."""
    while top or bottom or left or right:
        h, w = x.shape[-2:]
        t, b, lf, r = min(top, h - 1), min(bottom, h - 1), min(left, w - 1), min(right, w - 1)
        x = F.pad(x, (lf, r, t, b), mode="reflect")
        top, bottom, left, right = top - t, bottom - b, left - lf, right - r
    return x


def with_context(images: torch.Tensor, depth: int) -> torch.Tensor:
    """(N, C, S, S) images mirrored out to the smallest input window of a depth-``depth`` U-Net whose
    output covers them: crop the network's output to [:S, :S] for one value per pixel."""
    side = images.shape[-1]
    window = fit_input(side, depth)
    margin = (window - output_size(window, depth)) // 2
    extra = window - 2 * margin - side
    return mirror_pad(images, margin, margin + extra, margin, margin + extra)


def predict_whole(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Class logits (K, H, W) from one pass over the whole mirrored image, for an image whose side plus
    the context fits the network exactly (the reference that tiling must reproduce)."""
    padded = with_context(image[None], model.config.depth)
    with torch.no_grad():
        return model(padded.to(next(model.parameters()).device))[
            0, :, : image.shape[-2], : image.shape[-1]
        ].cpu()
