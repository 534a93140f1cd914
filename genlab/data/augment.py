"""Batch augmentations on tensors, drawn from an explicit generator so they repeat exactly on resume."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    degrees: float = 10.0,
    translate: float = 0.1,
    scale: tuple[float, float] = (0.9, 1.1),
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Rotate by up to ``degrees``, shift by up to ``translate`` of the side, and scale each image at random.

    One bilinear resampling (``affine_grid`` + ``grid_sample``) applies the whole transform; with
    degrees=0, translate=0 and scale=(1, 1) the images come back unchanged.
    """
    n = images.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    angle = uniform(-degrees, degrees) * math.pi / 180
    s = uniform(*scale)
    tx, ty = uniform(-2 * translate, 2 * translate), uniform(-2 * translate, 2 * translate)
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    return out.clamp(0.0, 1.0)
