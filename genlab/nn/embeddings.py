"""Position and timestep embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """The sinusoidal encoding of Vaswani et al. (2017, section 3.5) for real-valued positions.

    Returns (N, dim) = [cos(p * w_i), sin(p * w_i)] with w_i = max_period^(-i / (dim/2)); the diffusion
    U-Net of Ho et al. (2020) embeds its timestep this way, and fractional timesteps are allowed.
    """
    if dim % 2:
        raise ValueError(f"embedding dimension must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=positions.device) / half)
    args = positions.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class TimestepShifts(nn.Module):
    """A diffusion timestep as one additive shift per stage of a network, for models that read noisy
    images x_t (the noise-aware classifier of Dhariwal & Nichol 2021, GLIDE's noised CLIP): the timestep's
    ``sinusoidal_embedding`` through a two-layer MLP, as the diffusion U-Net embeds it, split into one
    (N, size) vector per entry of ``sizes``. The last layer starts at zero, so a new model ignores t."""

    def __init__(self, sizes: tuple[int, ...] | list[int], hidden: int, dim: int = 64) -> None:
        super().__init__()
        self.sizes, self.dim = list(sizes), dim
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, sum(self.sizes)))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, t: torch.Tensor, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
        return self.mlp(sinusoidal_embedding(t, self.dim).to(dtype)).split(self.sizes, dim=1)
