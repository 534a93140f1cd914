"""Scaled dot-product attention, multi-head, over the pixels of a feature map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention2d(nn.Module):
    """Multi-head self-attention among the H*W positions of a feature map, pre-norm and residual.

    softmax(Q K^T / sqrt(d)) V per head (Vaswani et al. 2017, eq. 1) through
    ``F.scaled_dot_product_attention``, which picks a fused kernel where one exists. The output
    projection starts at zero, so a new block is the identity (as in the ADM U-Net of Dhariwal & Nichol).
    """

    def __init__(self, channels: int, head_dim: int = 32, groups: int = 8):
        super().__init__()
        if channels % head_dim:
            raise ValueError(f"channels ({channels}) must be a multiple of head_dim ({head_dim})")
        self.heads = channels // head_dim
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (N, heads, HW, d)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(n, c, h, w)
        return x + self.proj(out)
