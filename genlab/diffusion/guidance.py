"""Classifier-free guidance as a wrapper around any denoiser, so every sampler gets it for free."""

from __future__ import annotations

from collections.abc import Callable

import torch

from genlab.diffusion.denoiser import sigma_batch
from genlab.errors import GenlabError


class CFGDenoiser:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6) on a denoiser: D = D_u + s (D_c - D_u), with
    the conditional and unconditional halves evaluated in one batch.

    The paper writes the rule on eps; applying it to the x0 estimate is the same thing, because for fixed
    x and sigma both D and eps = (x - D) / sigma are affine in the network output, and an affine map
    commutes with the affine combination D_u + s (D_c - D_u). The same holds for v.

    The unconditional condition can be any condition: a negative prompt's embedding takes its place and
    the guidance then pushes away from it. ``cond`` and ``uncond`` hold per-sample tensors of batch size N
    under the same keywords (e.g. ``{"class_labels": LongTensor (N,)}``), passed to the denoiser as
    keyword arguments and concatenated along dim 0 for the joint batch [uncond; cond].

    scale = 1 evaluates only the conditional batch and equals plain conditional sampling exactly;
    scale = 0 evaluates only the unconditional batch. Any other scale costs one double-size evaluation.
    """

    def __init__(
        self, denoiser: Callable, scale: float, cond: dict[str, torch.Tensor], uncond: dict[str, torch.Tensor]
    ) -> None:
        if set(cond) != set(uncond):
            raise GenlabError(
                f"guidance needs the same condition keywords for both halves, got {sorted(cond)} "
                f"(conditional) and {sorted(uncond)} (unconditional)"
            )
        self.denoiser = denoiser
        self.scale = float(scale)
        self.cond = dict(cond)
        self.uncond = dict(uncond)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        if self.scale == 1.0:
            return self.denoiser(x, sigma, **self.cond)
        if self.scale == 0.0:
            return self.denoiser(x, sigma, **self.uncond)
        sigma = sigma_batch(sigma, x)
        joint = {key: torch.cat([self.uncond[key], self.cond[key]]) for key in self.cond}
        denoised = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), **joint)
        uncond, cond = denoised.chunk(2)
        return uncond + self.scale * (cond - uncond)
