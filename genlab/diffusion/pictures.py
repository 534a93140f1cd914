"""Pictures that explain diffusion: an image drowning in noise, and samples emerging from it."""

from __future__ import annotations

import torch

from genlab.diffusion.schedules import NoiseSchedule
from genlab.nn.pixels import to_images, to_model_space


def noising_strip(
    image: torch.Tensor, schedule: NoiseSchedule, frames: int = 8, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, list[str]]:
    """``image`` (C, H, W) in [0, 1] at ``frames`` evenly spaced timesteps of q(x_t | x_0), one noise draw.

    Returns the images (frames, C, H, W) in [0, 1] and captions naming t and abar_t.
    """
    t = torch.linspace(0, schedule.timesteps - 1, frames).round().long()
    x0 = to_model_space(image)[None].expand(frames, -1, -1, -1)
    noise = torch.randn(image.shape, generator=generator).expand_as(x0)
    xt = schedule.q_sample(x0, t, noise)
    abar = schedule.abar(t)
    captions = [f"t={int(k)} abar={float(a):.3f}" for k, a in zip(t, abar, strict=True)]
    return to_images(xt), captions


def trajectory_strip(trajectory: list[torch.Tensor], max_images: int = 8, columns: int = 9) -> torch.Tensor:
    """Rows of images (at most ``max_images``), each from noise (left) to the final sample (right).

    ``trajectory`` is a list of batches (N, C, H, W), one per sampling step plus the result; ``columns``
    evenly spaced steps are shown. Returned row-major, ready for save_grid(nrow=columns).
    """
    columns = min(columns, len(trajectory))
    picks = torch.linspace(0, len(trajectory) - 1, columns).round().long().tolist()
    n = min(max_images, trajectory[0].shape[0])
    return torch.stack([torch.stack([trajectory[f][i] for f in picks]) for i in range(n)]).flatten(0, 1)
