"""Elastic deformations (Ronneberger et al. 2015, section 3.1): random displacement vectors on a coarse
3x3 grid, drawn from a Gaussian of 10 pixels standard deviation, interpolated smoothly (bicubically) to
every pixel; the image is resampled bilinearly and its masks by nearest neighbour along the same field,
so they stay aligned."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def displacement_field(
    size: int, grid: int = 3, sigma: float = 10.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(size, size, 2) displacements in pixels, (dx, dy), smooth over the image."""
    coarse = torch.randn(1, 2, grid, grid, generator=generator) * sigma
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)[0].permute(1, 2, 0)


def warp(x: torch.Tensor, field: torch.Tensor, mode: str) -> torch.Tensor:
    """Sample (N, C, H, W) ``x`` at each pixel plus its displacement, mirroring outside the image."""
    n, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
    gx = (xs + field[..., 0].to(x.dtype)) / max(w - 1, 1) * 2 - 1
    gy = (ys + field[..., 1].to(x.dtype)) / max(h - 1, 1) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1)[None].expand(n, -1, -1, -1)
    return F.grid_sample(x, grid, mode=mode, padding_mode="reflection", align_corners=True)


def elastic_deform(
    image: torch.Tensor,
    masks: torch.Tensor,
    grid: int = 3,
    sigma: float = 10.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random elastic deformation of ``image`` (C, H, W) and the same of ``masks`` (M, H, W), which
    may hold class or instance labels (nearest-neighbour keeps them labels)."""
    field = displacement_field(image.shape[-1], grid, sigma, generator)
    warped = warp(image[None], field, "bilinear")[0]
    labels = warp(masks[None].double(), field, "nearest")[0].round().to(masks.dtype)
    return warped, labels
