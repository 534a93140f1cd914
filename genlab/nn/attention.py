"""Scaled dot-product attention, multi-head, over the pixels of a feature map."""

from __future__ import annotations

import math

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
        # The 1x1 convolutions applied to the pixels as tokens (N, HW, C): the same products, in the
        # layout the attention kernels take without copies, forward and backward (1.5x faster on a CPU).
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        qkv = F.linear(tokens, self.qkv.weight.flatten(1), self.qkv.bias)
        q, k, v = qkv.reshape(n, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out, _ = attention(q, k, v)  # (N, heads, HW, d)
        out = F.linear(out.transpose(1, 2).reshape(n, h * w, c), self.proj.weight.flatten(1), self.proj.bias)
        return x + out.transpose(1, 2).reshape(n, c, h, w)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    return_weights: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(Q K^T / sqrt(d)) V (Vaswani et al. 2017, eq. 1) on (..., L, d) tensors.

    ``key_mask`` (N, S), True for keys that may be attended to (padding is False), hides keys from every
    query. The fused ``F.scaled_dot_product_attention`` runs unless the weights themselves are wanted
    (attention maps), which take the explicit formula.

    On the CPU the products run in float32 also under bfloat16 autocast: torch's bfloat16 CPU kernel is 4x
    slower forward and backward than its float32 one at the sizes of genlab's networks (64 queries of 32
    dims, batch 32, torch 2.13), and these products are a small part of the FLOPs anyway.
    """
    mask = key_mask[:, None, None, :] if key_mask is not None else None
    if q.device.type == "cpu" and not return_weights:
        q, k, v = (t.float() for t in (q, k, v))  # float32 even under autocast, which would cast back
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask), None
    if not return_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask), None
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights @ v, weights


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of (N, L, D) token states over the tokens where the (N, L) ``mask`` is True (padding
    excluded); 0 for a row without tokens."""
    weights = mask.to(states.dtype)[..., None]
    return (states * weights).sum(1) / weights.sum(1).clamp_min(1)


class MultiHeadAttention(nn.Module):
    """Multi-head attention of queries (N, L, D) over a context (N, S, D_ctx), or over themselves.

    Vaswani et al. (2017, section 3.2.2): per-head projections, attention, concatenation, an output
    projection. Without positions added to the inputs it is permutation-equivariant in the queries and
    invariant to the order of the keys. With ``keep_weights`` set, the last call's attention weights
    (N, heads, L, S) are kept in ``weights`` (for attention maps).
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} must be a multiple of the number of heads {heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.keep_weights = False
        self.weights: torch.Tensor | None = None

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        context = x if context is None else context
        n, length, dim = x.shape
        q = self.q(x).reshape(n, length, self.heads, -1).transpose(1, 2)
        k, v = self.kv(context).reshape(n, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        out, weights = attention(q, k, v, key_mask, return_weights=self.keep_weights)
        self.weights = weights
        return self.out(out.transpose(1, 2).reshape(n, length, dim))


class CrossAttention2d(nn.Module):
    """Each pixel of a feature map attends to the tokens of a context (text), pre-norm and residual.

    The conditioning of latent diffusion (Rombach et al. 2022, eq. 3: Q from the image features, K and V
    from the text encoder's token states). The output projection starts at zero, so the block starts as
    the identity, as the U-Net's other blocks do.
    """

    def __init__(self, channels: int, context_dim: int, head_dim: int = 32, groups: int = 8):
        super().__init__()
        if channels % head_dim:
            raise ValueError(f"channels ({channels}) must be a multiple of head_dim ({head_dim})")
        self.norm = nn.GroupNorm(groups, channels)
        self.attn = MultiHeadAttention(channels, channels // head_dim, context_dim)
        nn.init.zeros_(self.attn.out.weight)
        nn.init.zeros_(self.attn.out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = self.norm(x).reshape(n, c, h * w).transpose(1, 2)
        out = self.attn(tokens, context, key_mask)
        return x + out.transpose(1, 2).reshape(n, c, h, w)
