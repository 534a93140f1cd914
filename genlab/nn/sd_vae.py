"""Stable Diffusion's KL autoencoder (diffusers' ``AutoencoderKL``), driven by the checkpoint's config.json.

The first stage of latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
Diffusion Models", section 3.1 and appendix G): a convolutional encoder halves the side of a [-1, 1]
image three times (f = 8) to the mean and log-variance of a diagonal Gaussian over a 4-channel latent
(Kingma & Welling 2014), and a decoder maps a latent back to an image. The diffusion model works on
latents multiplied by ``scaling_factor`` (0.18215 for SD 1.x and 2.x), which brings them near unit
variance. Both halves are ResBlocks, stride-2 convolutions or nearest upsampling, and one single-head
self-attention at the lowest resolution.

Attribute names are diffusers' state-dict keys (``encoder.down_blocks.0.resnets.0.norm1``,
``encoder.mid_block.attentions.0.to_q``, ``quant_conv``...), so ``diffusion_pytorch_model.safetensors``
loads with ``load_state_dict(strict=True)``; ``convert_legacy_attention`` renames the attention of old
checkpoints (``query``, ``key``, ``value``, ``proj_attn``) first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.checks import MAX_DEPTH, MAX_SIDE, MAX_WIDTH, check_range
from genlab.errors import GenlabError
from genlab.nn.pretrained import config_from_dict
from genlab.nn.sd_blocks import (
    Downsample,
    ResnetBlock,
    SDAttention,
    SizedModule,
    Upsample,
    check_activation,
    check_block_types,
)

EPS = 1e-6  # every GroupNorm of the autoencoder

# Keys of AutoencoderKL's config.json that do not change the network's math: `force_upcast` tells a
# pipeline to decode in float32 when it runs in float16 (a precision choice left to the caller).
IGNORED = {"force_upcast"}
# Latent normalisations of later models (SD3, SDXL's refiners...); SD 1.x and 2.x scale only.
REQUIRED_NONE = ("shift_factor", "latents_mean", "latents_std")
# AutoencoderKL's defaults: what a config.json that leaves a setting out means (a one-level toy; SD's
# files give every size, and those written before diffusers had `scaling_factor` get SD's).
DIFFUSERS_DEFAULTS: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D"],
    "block_out_channels": [64],
    "layers_per_block": 1,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 32,
    "scaling_factor": 0.18215,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "mid_block_add_attention": True,
}


@dataclass
class SDVAEConfig:
    """What genlab needs of an ``AutoencoderKL`` config. Defaults: the SD 1.x and 2.x autoencoder."""

    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",) * 4
    up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",) * 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2  # ResBlocks per encoder block (one more per decoder block)
    act_fn: str = "silu"
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int | tuple[int, ...] | None = 512  # the image side it was trained at (information only)
    scaling_factor: float = 0.18215  # latent * scaling_factor is what the diffusion model sees
    use_quant_conv: bool = True  # a 1x1 convolution on the encoder's moments
    use_post_quant_conv: bool = True  # a 1x1 convolution on the latent before decoding
    mid_block_add_attention: bool = True

    def __post_init__(self) -> None:
        blocks = len(self.block_out_channels)
        check_range("the number of `block_out_channels`", blocks, 1, MAX_DEPTH)
        for name in ("down_block_types", "up_block_types"):
            if len(getattr(self, name)) != blocks:
                raise GenlabError(
                    f"`{name}` has {len(getattr(self, name))} entries for {blocks} `block_out_channels`"
                )
        check_block_types("down_block_types", self.down_block_types, ("DownEncoderBlock2D",))
        check_block_types("up_block_types", self.up_block_types, ("UpDecoderBlock2D",))
        check_activation(self.act_fn)
        for name in ("in_channels", "out_channels", "latent_channels", "norm_num_groups"):
            check_range(name, getattr(self, name), 1, MAX_WIDTH)
        check_range("layers_per_block", self.layers_per_block, 1, MAX_DEPTH)
        for c in self.block_out_channels:
            check_range("every `block_out_channels` entry", c, 1, MAX_WIDTH)
            if c % self.norm_num_groups:
                raise GenlabError(
                    f"`block_out_channels` holds {c}, which does not divide into {self.norm_num_groups} "
                    "GroupNorm groups (`norm_num_groups`)"
                )
        sides = self.sample_size if isinstance(self.sample_size, tuple) else (self.sample_size,)
        for side in sides:
            if side is not None:
                check_range("sample_size", side, 1, MAX_SIDE)
        check_range("scaling_factor", self.scaling_factor, 1e-6, 1e6)

    @property
    def downsampling(self) -> int:
        """How many times smaller the latent's side is than the image's (8 for SD)."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_diffusers(cls, data: Any, source: str = "the autoencoder's config.json") -> SDVAEConfig:
        """The config of a diffusers ``AutoencoderKL`` (its ``config.json`` as a dict)."""
        if not isinstance(data, dict):
            raise GenlabError(f"{source} must be a JSON object of settings")
        fields = {}
        for key, value in (DIFFUSERS_DEFAULTS | data).items():
            if str(key).startswith("_") or key in IGNORED:  # _class_name, _diffusers_version...
                continue
            if key in REQUIRED_NONE:
                if value is not None:
                    raise GenlabError(
                        f"{source}: `{key}` is {value!r}; genlab runs the Stable Diffusion 1.x and 2.x "
                        "autoencoder, whose latents are only scaled (`scaling_factor`)"
                    )
                continue
            fields[key] = value
        unknown = sorted(set(fields) - set(cls.__dataclass_fields__))
        if unknown:
            raise GenlabError(
                f"{source} has settings genlab does not know ({', '.join(map(str, unknown))}); it may be "
                "a newer diffusers' autoencoder than SD 1.x and 2.x's"
            )
        return config_from_dict(cls, fields, source)


@dataclass
class DiagonalGaussian:
    """q(z|x) = N(mean, exp(logvar)) per latent number (Kingma & Welling 2014), as the encoder gives it;
    the log-variance is clamped to [-30, 20] as in latent diffusion."""

    mean: torch.Tensor
    logvar: torch.Tensor

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """mean + std * eps, eps drawn from ``generator`` (on its device, then moved, as diffusers does)."""
        device = generator.device if generator is not None else self.mean.device
        eps = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * eps.to(self.mean.device)


class SpatialSelfAttention(SDAttention):
    """GroupNorm, single-head self-attention among the H*W positions of a feature map, plus the input
    (diffusers' ``Attention`` with ``residual_connection=True``: ``group_norm``, ``to_q``... with biases)."""

    def __init__(self, channels: int, groups: int):
        super().__init__(channels, heads=1, bias=True)
        self.group_norm = nn.GroupNorm(groups, channels, eps=EPS)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = self.group_norm(x).permute(0, 2, 3, 1).reshape(n, h * w, c)
        out = super().forward(tokens)
        return out.reshape(n, h, w, c).permute(0, 3, 1, 2) + x


class MidBlock(nn.Module):
    """ResBlock, self-attention (unless ``mid_block_add_attention`` is off), ResBlock."""

    def __init__(self, c: int, cfg: SDVAEConfig):
        super().__init__()
        groups = cfg.norm_num_groups
        self.resnets = nn.ModuleList(ResnetBlock(c, c, None, groups, EPS) for _ in range(2))
        self.attentions = nn.ModuleList(
            [SpatialSelfAttention(c, groups)] if cfg.mid_block_add_attention else []
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        for attn in self.attentions:
            x = attn(x)
        return self.resnets[1](x)


class EncoderBlock(nn.Module):
    """ResBlocks, then a stride-2 convolution (padded on the right and bottom) unless it is the last."""

    def __init__(self, c_in: int, c: int, layers: int, last: bool, groups: int):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock(c_in if j == 0 else c, c, None, groups, EPS) for j in range(layers)
        )
        self.downsamplers = nn.ModuleList([] if last else [Downsample(c, padding=0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.resnets:
            x = layer(x)
        for layer in self.downsamplers:
            x = layer(x)
        return x


class DecoderBlock(nn.Module):
    """ResBlocks, then nearest upsampling and a convolution unless it is the last."""

    def __init__(self, c_in: int, c: int, layers: int, last: bool, groups: int):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock(c_in if j == 0 else c, c, None, groups, EPS) for j in range(layers)
        )
        self.upsamplers = nn.ModuleList([] if last else [Upsample(c)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.resnets:
            x = layer(x)
        for layer in self.upsamplers:
            x = layer(x)
        return x


class Encoder(nn.Module):
    """Image (N, in_channels, H, W) -> moments (N, 2 * latent_channels, H/f, W/f): mean, then log-variance."""

    def __init__(self, cfg: SDVAEConfig):
        super().__init__()
        widths, groups = cfg.block_out_channels, cfg.norm_num_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            EncoderBlock(widths[max(i - 1, 0)], c, cfg.layers_per_block, i == len(widths) - 1, groups)
            for i, c in enumerate(widths)
        )
        self.mid_block = MidBlock(widths[-1], cfg)
        self.conv_norm_out = nn.GroupNorm(groups, widths[-1], eps=EPS)
        self.conv_out = nn.Conv2d(widths[-1], 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class Decoder(nn.Module):
    """Latent (N, latent_channels, h, w) -> image (N, out_channels, f h, f w)."""

    def __init__(self, cfg: SDVAEConfig):
        super().__init__()
        widths, groups = cfg.block_out_channels[::-1], cfg.norm_num_groups
        self.conv_in = nn.Conv2d(cfg.latent_channels, widths[0], 3, padding=1)
        self.mid_block = MidBlock(widths[0], cfg)
        self.up_blocks = nn.ModuleList(
            DecoderBlock(widths[max(i - 1, 0)], c, cfg.layers_per_block + 1, i == len(widths) - 1, groups)
            for i, c in enumerate(widths)
        )
        self.conv_norm_out = nn.GroupNorm(groups, widths[-1], eps=EPS)
        self.conv_out = nn.Conv2d(widths[-1], cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class SDAutoencoder(SizedModule):
    """``encode(x)``: a [-1, 1] image (N, C, H, W) -> DiagonalGaussian over the unscaled latent (N, 4, H/8,
    W/8); ``decode(z)``: an unscaled latent -> an image in about [-1, 1] (not clamped). The diffusion
    model's latents are ``scaling_factor`` times these: ``decode(latents / vae.scaling_factor)``."""

    def __init__(self, config: SDVAEConfig):
        super().__init__()
        self.config = cfg = config
        self.scaling_factor = cfg.scaling_factor
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        moments, latent = 2 * cfg.latent_channels, cfg.latent_channels
        self.quant_conv = nn.Conv2d(moments, moments, 1) if cfg.use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(latent, latent, 1) if cfg.use_post_quant_conv else None

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        moments = self.encoder(x)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = moments.chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar.clamp(-30.0, 20.0))

    def decode(self, z: torch.Tensor, tile: int | None = None, overlap: float = 0.25) -> torch.Tensor:
        """The image of latent ``z``. With ``tile``, a latent wider or taller than ``tile`` is decoded in
        ``tile`` x ``tile`` pieces that overlap by ``overlap`` of a tile, blended linearly across the
        overlap (diffusers' ``tiled_decode``): the memory of one tile's decoding whatever the image's
        size, at the price of a result that is not the untiled one (each tile's attention and
        GroupNorm statistics see only that tile), with seams softened, not removed."""
        if tile is not None and (z.shape[-1] > tile or z.shape[-2] > tile):
            return self._tiled_decode(z, tile, overlap)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of ``x`` from its latent mean."""
        return self.decode(self.encode(x).mean)

    def _tiled_decode(self, z: torch.Tensor, tile: int, overlap: float) -> torch.Tensor:
        check_range("tile", tile, 1, MAX_SIDE)
        if not 0 <= overlap < 1:
            raise GenlabError(f"`overlap` must be in [0, 1) (got {overlap})")
        f = self.config.downsampling
        # Tile corners every `step` latent pixels; each tile keeps step * f image pixels and blends the
        # rest into its neighbours. diffusers writes keep as tile * f * (1 - overlap), the same number
        # whenever tile * overlap is whole (its default: 64 and 0.25), and a wrongly sized image otherwise.
        step = max(1, int(tile * (1 - overlap)))
        blend = (tile - step) * f
        keep = step * f
        rows = []
        for i in range(0, z.shape[2], step):
            row = []
            for j in range(0, z.shape[3], step):
                piece = z[:, :, i : i + tile, j : j + tile]
                if self.post_quant_conv is not None:
                    piece = self.post_quant_conv(piece)
                row.append(self.decoder(piece))
            rows.append(row)
        # Each tile is blended into the one above and the one to its left in place, as diffusers does,
        # so a tile below meets its upper neighbour already blended with that neighbour's left one.
        out_rows = []
        for i, row in enumerate(rows):
            for j, piece in enumerate(row):
                if i > 0:
                    _blend(rows[i - 1][j], piece, blend, dim=2)
                if j > 0:
                    _blend(row[j - 1], piece, blend, dim=3)
            out_rows.append(torch.cat([piece[:, :, :keep, :keep] for piece in row], dim=3))
        return torch.cat(out_rows, dim=2)


def _blend(a: torch.Tensor, b: torch.Tensor, extent: int, dim: int) -> None:
    """Overwrite the first ``extent`` rows (``dim=2``) or columns (3) of ``b`` with a linear cross-fade
    from the last ones of ``a``: weight y / extent on b at offset y."""
    extent = min(a.shape[dim], b.shape[dim], extent)
    if extent == 0:
        return
    shape = [1, 1, 1, 1]
    shape[dim] = extent
    w = (torch.arange(extent, device=b.device, dtype=torch.float64) / extent).reshape(shape)
    head = b.narrow(dim, 0, extent)
    head.copy_(a.narrow(dim, a.shape[dim] - extent, extent) * (1 - w).to(b.dtype) + head * w.to(b.dtype))


_LEGACY = re.compile(
    r"^((?:encoder|decoder)\.mid_block\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$"
)
_NEW_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def convert_legacy_attention(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with the autoencoder's attention in today's names.

    Checkpoints written by diffusers before 0.14 name the mid block's attention ``query``, ``key``,
    ``value`` and ``proj_attn`` (diffusers renames them on load, ``_convert_deprecated_attention_blocks``);
    those converted from the original latent-diffusion code may keep its 1x1 convolution weights of
    shape (C, C, 1, 1), which here become the (C, C) of a Linear. Other keys pass through unchanged."""
    out = {}
    for key, value in state.items():
        match = _LEGACY.match(key)
        if match:
            prefix, name, kind = match.groups()
            key = f"{prefix}.{_NEW_NAMES[name]}.{kind}"
            if kind == "weight" and value.ndim > 2:
                value = value.reshape(value.shape[0], value.shape[1])
        out[key] = value
    return out
