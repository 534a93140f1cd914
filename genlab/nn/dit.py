"""The diffusion transformer, DiT (Peebles & Xie 2023): the image cut into patches, a transformer over
the patch tokens conditioned by adaptive layer norm on the timestep and class (adaLN-Zero, section 3.2),
cross-attention to text tokens (as in the DiT variants for text-to-image, e.g. PixArt-alpha), and the
tokens put back into an image. Same call as the U-Net: ``forward(x, t, class_labels, context, mask)``.

Trained with ``genlab train diffusion --backbone dit`` (unconditional, class- or text-conditional, in
pixel or latent space; with text it sits inside genlab.nn.text_unet.TextUNet).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genlab.checks import MAX_CLASSES, MAX_DEPTH, MAX_SIDE, MAX_WIDTH, check_range
from genlab.errors import GenlabError
from genlab.nn.attention import MultiHeadAttention, masked_mean
from genlab.nn.embeddings import sinusoidal_embedding
from genlab.nn.pretrained import PretrainedMixin


@dataclass
class DiTConfig:
    in_channels: int = 1
    image_size: int = 28
    patch_size: int = 2  # as `genlab train diffusion --backbone dit` has always trained (README's runs)
    width: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 0  # > 0: class-conditional, with one extra "no class" entry for guidance
    context_dim: int = 0  # > 0: cross-attention to text tokens of this width
    out_channels: int = 0  # 0: same as in_channels

    def __post_init__(self) -> None:
        check_range("in_channels", self.in_channels, 1, MAX_WIDTH)
        check_range("image_size", self.image_size, 1, MAX_SIDE)
        check_range("patch_size", self.patch_size, 1, self.image_size)
        check_range("width", self.width, 1, MAX_WIDTH)
        check_range("depth", self.depth, 1, MAX_DEPTH)
        check_range("heads", self.heads, 1, self.width)
        check_range("mlp_ratio", self.mlp_ratio, 0.01, MAX_DEPTH)
        check_range("num_classes", self.num_classes, 0, MAX_CLASSES)
        check_range("context_dim", self.context_dim, 0, MAX_WIDTH)
        check_range("out_channels", self.out_channels, 0, MAX_WIDTH)
        if self.image_size % self.patch_size:
            raise GenlabError(
                f"the image side {self.image_size} must be a multiple of the patch size {self.patch_size}"
            )
        if self.width % self.heads:
            raise GenlabError(f"the width {self.width} must be a multiple of the heads {self.heads}")


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, H/p * W/p, C * p * p): row-major patches, each flattened channel-first."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n, (h // p) * (w // p), c * p * p)


def unpatchify(tokens: torch.Tensor, p: int, channels: int, size: int) -> torch.Tensor:
    """The inverse of ``patchify`` for square images of side ``size``."""
    n, g = tokens.shape[0], size // p
    x = tokens.reshape(n, g, g, channels, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n, channels, size, size)


def positions_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sinusoidal positions (grid * grid, dim): half the width for rows, half for columns."""
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    half = dim // 2
    return torch.cat(
        [
            sinusoidal_embedding(rows.flatten().float(), half),
            sinusoidal_embedding(cols.flatten().float(), half),
        ],
        1,
    )


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """Self-attention and MLP, each after a LayerNorm whose shift and scale, and a residual gate, come
    from the conditioning vector; the gates start at zero (adaLN-Zero), so each block starts as the
    identity. An optional cross-attention to text tokens sits between them, gated the same way."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.width
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = MultiHeadAttention(d, cfg.heads)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d))
        self.cross = MultiHeadAttention(d, cfg.heads, cfg.context_dim) if cfg.context_dim else None
        self.norm_cross = nn.LayerNorm(d, eps=1e-6) if cfg.context_dim else None
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, (9 if cfg.context_dim else 6) * d))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x, c, context=None, mask=None):
        parts = self.ada(c).chunk(9 if self.cross is not None else 6, dim=1)
        shift1, scale1, gate1, shift2, scale2, gate2 = parts[:6]
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
        if self.cross is not None:
            shift3, scale3, gate3 = parts[6:]
            if context is None:
                raise GenlabError("this DiT cross-attends to text: give the prompt's token states")
            x = x + gate3[:, None] * self.cross(modulate(self.norm_cross(x), shift3, scale3), context, mask)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class DiT(PretrainedMixin, nn.Module):
    """``forward(x, t, class_labels=None, context=None, context_mask=None)`` -> (N, C_out, H, W)."""

    kind = "diffusion"
    config_class = DiTConfig

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = cfg = config
        d, p = cfg.width, cfg.patch_size
        self.embed = nn.Linear(cfg.in_channels * p * p, d)
        self.register_buffer("pos", positions_2d(cfg.image_size // p, d), persistent=False)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.class_emb = nn.Embedding(cfg.num_classes + 1, d) if cfg.num_classes else None
        self.context_emb = nn.Linear(cfg.context_dim, d) if cfg.context_dim else None
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.out = nn.Linear(d, (cfg.out_channels or cfg.in_channels) * p * p)
        for layer in (self.ada_out[1], self.out):  # the final layer starts at zero (section 3.2)
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def condition(self, t, class_labels=None, context=None, context_mask=None) -> torch.Tensor:
        """The conditioning vector: timestep embedding + class embedding + pooled prompt."""
        c = self.time_mlp(sinusoidal_embedding(t, self.config.width))
        if self.class_emb is not None:
            if class_labels is None:  # unconditional: the extra "no class" entry
                class_labels = torch.full((t.shape[0],), self.config.num_classes, device=t.device)
            c = c + self.class_emb(class_labels)
        if self.context_emb is not None and context is not None:
            mask = context_mask
            if mask is None:
                mask = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
            c = c + self.context_emb(masked_mean(context, mask))
        return c

    def transform(self, h, c, context=None, context_mask=None) -> torch.Tensor:
        """Embedded tokens (N, L, width) -> output patches (N, L, C_out * p * p): the blocks and the final
        layer, whatever the tokens are (image patches here, spacetime patches in genlab.nn.video_dit)."""
        for block in self.blocks:
            h = block(h, c, context, context_mask)
        shift, scale = self.ada_out(c).chunk(2, dim=1)
        return self.out(modulate(self.norm_out(h), shift, scale))

    def forward(self, x, t, class_labels=None, context=None, context_mask=None) -> torch.Tensor:
        cfg = self.config
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        c = self.condition(t, class_labels, context, context_mask)
        h = self.transform(self.embed(patchify(x, cfg.patch_size)) + self.pos, c, context, context_mask)
        return unpatchify(h, cfg.patch_size, cfg.out_channels or cfg.in_channels, cfg.image_size)
