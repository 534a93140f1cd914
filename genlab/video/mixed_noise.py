"""Noise shared between the frames of a clip: PYoCo's mixed noise (Ge et al. 2023, "Preserve Your Own
Correlation: A Noise Prior for Video Diffusion Models", section 3.2), as a change of variables.

The mixed noise of a clip's T frames is eps_i = sqrt(rho) eps_shared + sqrt(1 - rho) eps_ind,i: every two
frames' noises correlate by ``rho`` (PYoCo's alpha^2 / (1 + alpha^2)). Its covariance over the frames is
Sigma = (1 - rho) I + rho 1 1^T, whose square root L has eigenvalue sqrt(1 - rho + rho T) on the mean of the
frames and sqrt(1 - rho) on every deviation from it. Diffusing clips x with this noise is exactly the
standard diffusion of y = L^-1 x, since L^-1 x_t = sqrt(abar) L^-1 x0 + sqrt(1 - abar) eps_white: so the
training loss, every sampler and classifier-free guidance stay as they are, and only the data is mapped in
(``decorrelate``) and the samples out (``correlate``).

What it does to a clip: the deviations of the frames from their mean, which is where motion is, are scaled
up by 1 / sqrt(1 - rho), the mean frame down by 1 / sqrt(1 - rho + rho T). Motion gets a larger share of
the signal at every noise level, so it is decided earlier in sampling, while the appearance, shown 8 times
over in a clip and so visible through more noise than an image's, is decided later.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def mixing_scales(rho: float, frames: int) -> tuple[float, float]:
    """(on the mean frame, on the deviations from it): the eigenvalues of L, the square root of the
    covariance (1 - rho) I + rho 1 1^T of ``frames`` frames' mixed noise."""
    return math.sqrt(1.0 - rho + rho * frames), math.sqrt(1.0 - rho)


def _apply(x: torch.Tensor, mean_scale: float, deviation_scale: float) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return mean * mean_scale + (x - mean) * deviation_scale


def correlate(y: torch.Tensor, rho: float) -> torch.Tensor:
    """L y over the frames (dim 1) of clips (N, T, ...): white noise becomes mixed noise, and a sample of
    the decorrelated diffusion becomes a clip."""
    if rho == 0:
        return y
    mean_scale, deviation_scale = mixing_scales(rho, y.shape[1])
    return _apply(y, mean_scale, deviation_scale)


def decorrelate(x: torch.Tensor, rho: float) -> torch.Tensor:
    """L^-1 x over the frames (dim 1) of clips (N, T, ...): the inverse of ``correlate``."""
    if rho == 0:
        return x
    mean_scale, deviation_scale = mixing_scales(rho, x.shape[1])
    return _apply(x, 1.0 / mean_scale, 1.0 / deviation_scale)


class MixedNoiseDenoiser:
    """A denoiser of decorrelated clips y whose estimate is clamped to the data range as a clip: y0 is
    mapped to x0 = L y0, clamped to [low, high], and mapped back (``ClampedDenoiser`` for mixed noise)."""

    def __init__(self, denoiser: Callable, rho: float, low: float = -1.0, high: float = 1.0) -> None:
        self.denoiser, self.rho = denoiser, rho
        self.low, self.high = low, high

    def __call__(self, y: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        x0 = correlate(self.denoiser(y, sigma), self.rho).clamp(self.low, self.high)
        return decorrelate(x0, self.rho)
