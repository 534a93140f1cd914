"""Position and timestep embeddings."""

from __future__ import annotations

import math

import torch


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
