"""Diffusion purification (Nie et al. 2022, "Diffusion models for adversarial purification"): noise the
input to a small timestep t*, run the reverse process of a diffusion model back to t = 0, then classify.
The noise drowns the adversarial perturbation; the model restores a clean-looking image of the same
content. Note the adversary here is oblivious to the purifier: an adaptive attack that differentiates
through the sampling (or uses BPDA/EOT, Athalye et al. 2018) weakens it considerably."""

from __future__ import annotations

import torch

from genlab.adversarial.attacks import check_inputs
from genlab.diffusion.generate import generate


@torch.no_grad()
def purify(
    pipe,
    images: torch.Tensor,
    strength: float = 0.1,
    steps: int = 10,
    sampler: str = "ddpm",
    generator: torch.Generator | None = None,
    batch_size: int = 250,
) -> torch.Tensor:
    """``images`` in [0, 1] noised to timestep round(strength T) - 1 and denoised by the (unconditional
    side of the) diffusion model of ``pipe`` in ``steps`` steps."""
    check_inputs(images)
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size]
        out.append(
            generate(
                pipe.unet,
                pipe.schedule,
                pipe.diffusion.parameterization,
                tuple(x.shape),
                steps=steps,
                sampler=sampler,
                generator=generator,
                init_images=x,
                strength=strength,
            ).cpu()
        )
    return torch.cat(out)
