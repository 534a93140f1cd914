"""The pieces Stable Diffusion's U-Net and autoencoder share: residual block, resampling, attention.

Latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models",
appendix G) builds both networks from the ResBlocks of the diffusion U-Net (Ho et al. 2020, after
Ronneberger et al. 2015), stride-2 convolutions to halve and nearest-neighbour upsampling plus a
convolution to double. The attribute names are those of diffusers' modules (``norm1``, ``conv1``,
``time_emb_proj``, ``to_q``, ``to_out.0``...), so a checkpoint's state dict loads with ``strict=True``
as it is: the parameter names are the checkpoint's own.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import GenlabError
from genlab.nn.pretrained import Sized

ACTIVATIONS = ("silu", "swish")  # the same function under two names; SD uses SiLU everywhere
ATTENTION_CHUNK = 2**25  # attention weights computed at once when they are kept: 128 MB in float32


class SizedModule(Sized, nn.Module):
    """A network built from one config, sized before it is built (genlab.nn.pretrained.Sized): a hostile
    ``config.json`` asking for 65536-wide blocks fails before a byte is allocated."""


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv, plus the projected timestep embedding, GroupNorm-SiLU-dropout-conv, plus the
    input (a 1x1 convolution when the width changes), divided by ``output_scale_factor``.

    The ResBlock of Ho et al. (2020, appendix B) as diffusers' ``ResnetBlock2D`` computes it with
    ``time_embedding_norm="default"``: the embedding passes through SiLU before its projection, and the
    autoencoder's blocks (``temb_channels=None``) have no projection at all.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        temb_channels: int | None,
        groups: int,
        eps: float,
        dropout: float = 0.0,
        output_scale_factor: float = 1.0,
    ):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in, eps=eps)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, c_out) if temb_channels is not None else None
        self.norm2 = nn.GroupNorm(groups, c_out, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None
        self.output_scale_factor = output_scale_factor

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_emb_proj is not None and temb is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        return (skip + h) / self.output_scale_factor


class Downsample(nn.Module):
    """A 3x3 convolution of stride 2. With ``padding=0`` (the autoencoder) the map is first padded by one
    pixel on the right and at the bottom only, as the original latent-diffusion code does."""

    def __init__(self, channels: int, padding: int):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour doubling (or to ``size``, when the skip it meets has an odd side), then a 3x3
    convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: torch.Size | tuple[int, int] | None = None) -> torch.Tensor:
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=tuple(size), mode="nearest")
        return self.conv(x)


def scaled_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    upcast: bool = False,
    return_weights: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(Q K^T / sqrt(d)) V (Vaswani et al. 2017, eq. 1) on (N, heads, L, d) queries and (N, heads,
    S, d) keys and values; returns the (N, heads, L, d) result in q's dtype and, when asked, the (N,
    heads, L, S) weights.

    Without weights, ``F.scaled_dot_product_attention`` runs: its fused kernels never hold the (L, S)
    score matrix, so self-attention over the 4096 positions of a 64x64 latent costs no more memory than
    its inputs. The weights themselves (attention maps) take the explicit formula, a block of queries
    at a time, so that only the kept weights grow with L, not the temporaries.

    ``upcast`` computes in float32 under reduced precision (SD 2.1's ``upcast_attention``: its
    scores overflow float16). On the CPU the products run in float32 always: torch's bfloat16 CPU
    kernel is several times slower (see genlab.nn.attention.attention).
    """
    dtype = q.dtype
    fp32 = upcast or q.device.type == "cpu"  # also under autocast, which would cast back down
    with torch.autocast(q.device.type, enabled=False) if fp32 else nullcontext():
        if fp32:
            q, k, v = q.float(), k.float(), v.float()
        if not return_weights:
            return F.scaled_dot_product_attention(q, k, v).to(dtype), None
        n, heads, length, dim = q.shape
        rows = max(1, ATTENTION_CHUNK // max(1, n * heads * k.shape[-2]))
        outs, weights = [], []
        for start in range(0, length, rows):
            scores = q[:, :, start : start + rows] @ k.transpose(-1, -2) * dim**-0.5
            w = scores.softmax(dim=-1)
            outs.append(w.to(v.dtype) @ v)
            weights.append(w)
        return torch.cat(outs, dim=2).to(dtype), torch.cat(weights, dim=2)


class SDAttention(nn.Module):
    """Multi-head attention of (N, L, query_dim) queries over a (N, S, context_dim) context, or over
    themselves (``context_dim=None``): diffusers' ``Attention`` with its ``to_q``, ``to_k``, ``to_v``
    and ``to_out.0`` names.

    In the U-Net, ``attn1`` is self-attention among the latent's pixels and ``attn2`` the
    cross-attention of latent diffusion (Rombach et al. 2022, eq. 3: Q from the image features, K and V
    from the text encoder's token states); ``is_cross`` says which. With ``keep_weights`` set, the
    last call's attention weights (N, heads, L, S) are kept in ``weights``, as
    genlab.nn.attention.MultiHeadAttention does, for attention maps.
    """

    def __init__(
        self,
        query_dim: int,
        heads: int,
        context_dim: int | None = None,
        bias: bool = False,
        upcast: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.heads = heads
        self.is_cross = context_dim is not None
        self.upcast = upcast
        self.to_q = nn.Linear(query_dim, query_dim, bias=bias)
        self.to_k = nn.Linear(context_dim or query_dim, query_dim, bias=bias)
        self.to_v = nn.Linear(context_dim or query_dim, query_dim, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(query_dim, query_dim), nn.Dropout(dropout)])
        self.keep_weights = False
        self.weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        n, length, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # (N, L, D) -> (N, heads, L, D / heads)
            return t.reshape(n, t.shape[1], self.heads, -1).transpose(1, 2)

        q, k, v = split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context))
        out, self.weights = scaled_attention(q, k, v, self.upcast, return_weights=self.keep_weights)
        out = out.transpose(1, 2).reshape(n, length, -1)
        return self.to_out[1](self.to_out[0](out))


def check_activation(act_fn: str) -> None:
    if act_fn not in ACTIVATIONS:
        raise GenlabError(f"`act_fn` is {act_fn!r}; genlab runs Stable Diffusion's 'silu' only")


def check_block_types(field: str, types: tuple[str, ...], known: tuple[str, ...]) -> None:
    """A GenlabError naming ``field`` when it holds a block type outside ``known``."""
    for name in types:
        if name not in known:
            raise GenlabError(
                f"`{field}` holds {name!r}, which genlab does not know; it runs {', '.join(known)}"
            )
