"""The diffusion U-Net: contracting path, bottleneck and expanding path with skip connections.

The denoiser of Ho et al. (2020, appendix B), after the PixelCNN++ / Wide-ResNet backbone, with the
refinements of Nichol & Dhariwal (2021) and Dhariwal & Nichol (2021): ResBlocks with GroupNorm and an
added timestep embedding, skip connections by concatenation (Ronneberger et al. 2015), self-attention at
low resolution, an optional class embedding added to the timestep embedding, and zero-initialised last
layers so that each block starts as the identity. The network knows nothing of noise schedules: it maps
(x_t, t, class) to whatever the parameterization asks for (eps, v or x0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlab.checks import MAX_CLASSES, MAX_DEPTH, MAX_SIDE, MAX_WIDTH, check_fraction, check_range
from genlab.errors import GenlabError
from genlab.nn.attention import CrossAttention2d, SelfAttention2d, masked_mean
from genlab.nn.embeddings import sinusoidal_embedding
from genlab.nn.pretrained import PretrainedMixin


@dataclass
class UNetConfig:
    in_channels: int = 1
    out_channels: int | None = None  # default: in_channels
    image_size: int = 28
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)  # one resolution level per entry, halving between levels
    num_res_blocks: int = 1  # ResBlocks per level on the way down (one more on the way up)
    attention_levels: tuple[int, ...] = (2,)  # levels (0 = full resolution) with self-attention
    head_dim: int = 32
    dropout: float = 0.0
    num_classes: int = 0  # 0: unconditional; else labels 0..K-1 and K, the "no class" of guidance
    groups: int = 8  # GroupNorm groups
    context_dim: int = 0  # >0: cross-attention to context tokens of this width at the attention levels
    coordinates: bool = False  # two input channels holding each pixel's (x, y): CoordConv
    lowres_channels: int = 0  # > 0: a super-resolution model, given a low-resolution image to sharpen

    def __post_init__(self) -> None:
        check_range("in_channels", self.in_channels, 1, MAX_WIDTH)
        if self.out_channels is not None:
            check_range("out_channels", self.out_channels, 1, MAX_WIDTH)
        check_range("image_size", self.image_size, 1, MAX_SIDE)
        check_range("base_channels", self.base_channels, 1, MAX_WIDTH)
        check_range("the number of `channel_mults`", len(self.channel_mults), 1, MAX_DEPTH)
        for m in self.channel_mults:
            check_range("every `channel_mults` entry", m, 1, MAX_WIDTH)
        check_range("num_res_blocks", self.num_res_blocks, 1, MAX_DEPTH)
        for level in self.attention_levels:
            check_range("every `attention_levels` entry", level, 0, MAX_DEPTH)
        check_range("head_dim", self.head_dim, 1, MAX_WIDTH)
        check_fraction("dropout", self.dropout)
        check_range("num_classes", self.num_classes, 0, MAX_CLASSES)
        check_range("groups", self.groups, 1, MAX_WIDTH)
        check_range("context_dim", self.context_dim, 0, MAX_WIDTH)
        check_range("lowres_channels", self.lowres_channels, 0, MAX_WIDTH)

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.channel_mults) - 1)


def with_coordinates(x: torch.Tensor) -> torch.Tensor:
    """``x`` with two more channels, each pixel's column and row scaled to [-1, 1] (CoordConv, Liu et al.
    2018, section 3). Convolutions are translation-equivariant, so without them the only clue to where a
    pixel lies is the zero padding at the border, and "at the top left" is slow to learn."""
    n, _, h, w = x.shape
    rows = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
    cols = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
    grid = torch.stack(torch.meshgrid(cols, rows, indexing="xy"))  # (2, H, W): x then y
    return torch.cat([x, grid.expand(n, -1, -1, -1)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, plus the projected timestep embedding, GroupNorm-SiLU-dropout-conv, plus skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Level(nn.Module):
    """The ResBlocks (each followed by attention where asked) of one resolution on one path."""

    def __init__(self, channels_in: list[int], c_out: int, emb_dim: int, attention: bool, cfg: UNetConfig):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(c, c_out, emb_dim, cfg.dropout, cfg.groups) for c in channels_in)
        self.attns = nn.ModuleList(
            SelfAttention2d(c_out, cfg.head_dim, cfg.groups) if attention else nn.Identity()
            for _ in channels_in
        )
        cross = attention and cfg.context_dim > 0
        self.cross = nn.ModuleList(
            CrossAttention2d(c_out, cfg.context_dim, cfg.head_dim, cfg.groups) for _ in channels_in if cross
        )

    def attend(self, j: int, h: torch.Tensor, context: torch.Tensor | None, mask: torch.Tensor | None):
        """Block ``j``'s self-attention, then its cross-attention to ``context`` when the level has one."""
        h = self.attns[j](h)
        return self.cross[j](h, context, mask) if len(self.cross) else h


class UNet(PretrainedMixin, nn.Module):
    """``forward(x, t, class_labels=None)``: x (N, C, H, W), t (N,) real timesteps -> (N, C_out, H, W)."""

    kind = "diffusion"
    config_class = UNetConfig

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        base, mults = cfg.base_channels, cfg.channel_mults
        if any(base * m % cfg.groups for m in mults):
            raise GenlabError(f"every level's channels must divide into {cfg.groups} GroupNorm groups")
        if cfg.image_size % cfg.downsampling:
            raise GenlabError(
                f"image size {cfg.image_size} is not divisible by the U-Net's downsampling "
                f"{cfg.downsampling} ({len(mults)} levels); resize the data or use fewer `channel_mults`"
            )
        emb_dim = 4 * base
        self.time_mlp = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes else None
        # The prompt as a whole (mean of its token states) joins the timestep embedding, as the pooled
        # text embedding does in Imagen and SDXL; the tokens themselves enter through cross-attention.
        self.context_emb = nn.Linear(cfg.context_dim, emb_dim) if cfg.context_dim else None
        extra = 2 * cfg.coordinates + cfg.lowres_channels
        self.conv_in = nn.Conv2d(cfg.in_channels + extra, base, 3, padding=1)

        skips, c = [base], base
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        for i, m in enumerate(mults):
            ins = []
            for _ in range(cfg.num_res_blocks):
                ins.append(c)
                c = base * m
                skips.append(c)
            self.down.append(Level(ins, c, emb_dim, i in cfg.attention_levels, cfg))
            if i < len(mults) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid1 = ResBlock(c, c, emb_dim, cfg.dropout, cfg.groups)
        self.mid_attn = SelfAttention2d(c, cfg.head_dim, cfg.groups)
        self.mid_cross = (
            CrossAttention2d(c, cfg.context_dim, cfg.head_dim, cfg.groups) if cfg.context_dim else None
        )
        self.mid2 = ResBlock(c, c, emb_dim, cfg.dropout, cfg.groups)

        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, m in reversed(list(enumerate(mults))):
            ins = []
            for _ in range(cfg.num_res_blocks + 1):
                ins.append(c + skips.pop())
                c = base * m
            self.up.append(Level(ins, c, emb_dim, i in cfg.attention_levels, cfg))
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.norm_out = nn.GroupNorm(cfg.groups, c)
        self.conv_out = nn.Conv2d(c, cfg.out_channels or cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def embed(self, t: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        emb = self.time_mlp(sinusoidal_embedding(t, self.config.base_channels))
        if self.class_emb is not None:
            if class_labels is None:  # unconditional: the extra "no class" entry
                class_labels = torch.full((t.shape[0],), self.config.num_classes, device=t.device)
            emb = emb + self.class_emb(class_labels)
        return emb

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        lowres: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``context`` (N, S, context_dim): text token states; ``context_mask`` (N, S): True on tokens;
        ``lowres`` (N, lowres_channels, h, w), any h, w: the image a super-resolution model sharpens, in
        [-1, 1], resized to x's size and concatenated to it (SR3, Saharia et al. 2022, section 2)."""
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb, context_mask = self.condition(t, class_labels, context, context_mask)
        if self.config.lowres_channels:
            if lowres is None or lowres.shape[1] != self.config.lowres_channels:
                raise GenlabError(
                    f"this U-Net upscales: give a low-resolution image of {self.config.lowres_channels} "
                    "channels (lowres=...)"
                )
            x = torch.cat([x, F.interpolate(lowres.to(x), size=x.shape[-2:], mode="bicubic")], dim=1)
        return self.trunk(x, emb, context, context_mask)

    def condition(
        self,
        t: torch.Tensor,
        class_labels: torch.Tensor | None,
        context: torch.Tensor | None,
        context_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The embedding every ResBlock adds (timestep, class and pooled prompt) and the prompt's mask
        (all tokens when none is given)."""
        emb = self.embed(t, class_labels)
        if self.context_emb is not None:
            if context is None:
                raise GenlabError("this U-Net is text-conditional: it needs the prompt's token states")
            if context_mask is None:
                context_mask = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
            emb = emb + self.context_emb(masked_mean(context, context_mask))
        return emb, context_mask

    def trunk(
        self,
        x: torch.Tensor,
        emb: torch.Tensor,
        context: torch.Tensor | None,
        context_mask: torch.Tensor | None,
        mix: Callable[[torch.Tensor, str, int, int], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The network from ``conv_in`` to ``conv_out`` given the conditioning of ``condition``. ``mix(h,
        path, level, block)`` runs after every block (path "down", "mid" or "up"; in the middle after its
        attention): the video U-Net mixes its frames there (genlab.nn.video_unet)."""
        h = self.conv_in(with_coordinates(x) if self.config.coordinates else x)
        hs = [h]
        for i, level in enumerate(self.down):
            for j, block in enumerate(level.blocks):
                h = level.attend(j, block(h, emb), context, context_mask)
                if mix is not None:
                    h = mix(h, "down", i, j)
                hs.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                hs.append(h)
        h = self.mid_attn(self.mid1(h, emb))
        if self.mid_cross is not None:
            h = self.mid_cross(h, context, context_mask)
        if mix is not None:
            h = mix(h, "mid", 0, 0)
        h = self.mid2(h, emb)
        for i, level in enumerate(self.up):
            for j, block in enumerate(level.blocks):
                h = level.attend(j, block(torch.cat([h, hs.pop()], dim=1), emb), context, context_mask)
                if mix is not None:
                    h = mix(h, "up", i, j)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))
