"""How close images are to their originals: peak signal-to-noise ratio."""

from __future__ import annotations

import torch

from genlab.errors import GenlabError


def psnr(images: torch.Tensor, reference: torch.Tensor, peak: float = 1.0) -> float:
    """10 log10(peak^2 / MSE), the MSE taken over all pixels of both batches (in [0, peak])."""
    if images.shape != reference.shape:
        raise GenlabError(
            f"PSNR compares equal shapes, got {tuple(images.shape)} and {tuple(reference.shape)}"
        )
    mse = (images.double() - reference.double()).pow(2).mean().clamp_min(1e-20)
    return float(10.0 * torch.log10(peak**2 / mse))
