"""Stable Diffusion's U-Net (v1.x and v2.x), driven by the checkpoint's own ``config.json``.

The denoiser of latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
Diffusion Models", section 3.3 and appendix E.2): the diffusion U-Net of Ho et al. (2020) after
Ronneberger et al. (2015) on the autoencoder's 4-channel latent, where every ResBlock of the upper three
resolutions is followed by a spatial transformer: GroupNorm, a projection to tokens, transformer blocks
(self-attention among the pixels, cross-attention to the text encoder's token states, a GEGLU
feed-forward), a projection back, plus the input. It maps (z_t, t, text states) to what the
checkpoint was trained to predict (eps for SD 1.x and 2.x-base, v for SD 2.x at 768): that is the
scheduler's business, not the network's.

Module attribute names are diffusers' ``UNet2DConditionModel`` state-dict keys (``conv_in``,
``time_embedding.linear_1``, ``down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k``...), so a
checkpoint's ``diffusion_pytorch_model.safetensors`` loads with ``load_state_dict(strict=True)`` unrenamed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.checks import MAX_DEPTH, MAX_SIDE, MAX_WIDTH, check_fraction, check_range
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

DOWN_BLOCKS = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCKS = ("UpBlock2D", "CrossAttnUpBlock2D")
MID_BLOCKS = ("UNetMidBlock2DCrossAttn",)
MAX_LAYERS = MAX_DEPTH * MAX_DEPTH  # ResBlocks plus transformer blocks in one network

# Keys of diffusers' config.json that do not change the math of the blocks genlab runs: the names of
# the class and of the version that wrote it, and settings read only by block types or embeddings that
# the required values below rule out (Resnet*/Simple* blocks, class and added embeddings).
IGNORED = {
    "resnet_skip_time_act",  # ResnetDownsampleBlock2D and the Simple* blocks only
    "resnet_out_scale_factor",  # idem
    "addition_time_embed_dim",  # only with an `addition_embed_type`
    "addition_embed_type_num_heads",  # idem
    "projection_class_embeddings_input_dim",  # only with a `class_embed_type` or `addition_embed_type`
}

# Settings SD 1.x and 2.x leave at these values (a list: each of its entries); another value is a network
# genlab does not build.
REQUIRED: dict[str, tuple[Any, ...]] = {
    "only_cross_attention": (False,),
    "dual_cross_attention": (False,),
    "class_embed_type": (None,),
    "num_class_embeds": (None,),
    "addition_embed_type": (None,),
    "encoder_hid_dim": (None,),
    "encoder_hid_dim_type": (None,),
    "resnet_time_scale_shift": ("default",),
    "time_embedding_type": ("positional",),
    "time_embedding_act_fn": (None,),
    "timestep_post_act": (None,),
    "time_cond_proj_dim": (None,),
    "conv_in_kernel": (3,),
    "conv_out_kernel": (3,),
    "attention_type": ("default",),
    "class_embeddings_concat": (False,),
    "mid_block_only_cross_attention": (None, False),
    "cross_attention_norm": (None,),
    "reverse_transformer_layers_per_block": (None,),
}

# UNet2DConditionModel's defaults for the settings genlab reads: what a config.json that leaves one
# out means (SD 1.5's, but for a text width of 1280 and no sample size).
DIFFUSERS_DEFAULTS: dict[str, Any] = {
    "sample_size": None,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "dropout": 0.0,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 1280,
    "transformer_layers_per_block": 1,
    "attention_head_dim": 8,
    "num_attention_heads": None,
    "use_linear_projection": False,
    "upcast_attention": False,
    "time_embedding_dim": None,
}


@dataclass
class SDUNetConfig:
    """What genlab needs of a ``UNet2DConditionModel`` config; per-block settings hold one entry per
    down block (the mid block takes the last, the up blocks read them in reverse). Defaults: SD 1.5."""

    sample_size: int | None = 64  # the latent side it was trained at (information only)
    in_channels: int = 4
    out_channels: int = 4
    center_input_sample: bool = False  # x -> 2x - 1 first
    flip_sin_to_cos: bool = True  # the timestep embedding is [cos, sin] (else [sin, cos])
    freq_shift: float = 0.0  # frequencies exp(-log(10000) i / (half - freq_shift))
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    mid_block_type: str = "UNetMidBlock2DCrossAttn"
    up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: tuple[int, ...] = (2, 2, 2, 2)  # ResBlocks per down block (one more going up)
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0  # the mid block's ResBlocks divide their output by it
    dropout: float = 0.0
    act_fn: str = "silu"
    norm_num_groups: int = 32
    norm_eps: float = 1e-5  # the ResBlocks' GroupNorm (the transformers' norms use 1e-6 and 1e-5)
    cross_attention_dim: tuple[int, ...] = (768,) * 4  # width of the text states
    transformer_layers_per_block: tuple[int, ...] = (1, 1, 1, 1)
    num_attention_heads: tuple[int, ...] = (8, 8, 8, 8)  # heads, not their width: see from_diffusers
    use_linear_projection: bool = False  # proj_in/proj_out as Linear (SD 2.x) or 1x1 Conv2d (SD 1.x)
    upcast_attention: bool = False  # attention in float32 under reduced precision (SD 2.1)
    time_embedding_dim: int | None = None  # default: 4 * block_out_channels[0]

    def __post_init__(self) -> None:
        blocks = len(self.block_out_channels)
        check_range("the number of `block_out_channels`", blocks, 1, MAX_DEPTH)
        for name in (
            "down_block_types",
            "up_block_types",
            "layers_per_block",
            "cross_attention_dim",
            "transformer_layers_per_block",
            "num_attention_heads",
        ):
            if len(getattr(self, name)) != blocks:
                raise GenlabError(
                    f"`{name}` has {len(getattr(self, name))} entries for {blocks} `block_out_channels`"
                )
        check_block_types("down_block_types", self.down_block_types, DOWN_BLOCKS)
        check_block_types("up_block_types", self.up_block_types, UP_BLOCKS)
        check_block_types("mid_block_type", (self.mid_block_type,), MID_BLOCKS)
        check_activation(self.act_fn)
        if self.sample_size is not None:
            check_range("sample_size", self.sample_size, 1, MAX_SIDE)
        check_range("in_channels", self.in_channels, 1, MAX_WIDTH)
        check_range("out_channels", self.out_channels, 1, MAX_WIDTH)
        check_range("freq_shift", self.freq_shift, 0, 1)
        check_range("downsample_padding", self.downsample_padding, 0, 1)
        check_range("mid_block_scale_factor", self.mid_block_scale_factor, 1e-6, 1e6)
        check_fraction("dropout", self.dropout)
        check_range("norm_num_groups", self.norm_num_groups, 1, MAX_WIDTH)
        check_range("norm_eps", self.norm_eps, 0, 1)
        if self.time_embedding_dim is not None:
            check_range("time_embedding_dim", self.time_embedding_dim, 1, MAX_WIDTH)
        for name in ("block_out_channels", "cross_attention_dim", "num_attention_heads"):
            for value in getattr(self, name):
                check_range(f"every `{name}` entry", value, 1, MAX_WIDTH)
        for name in ("layers_per_block", "transformer_layers_per_block"):
            for value in getattr(self, name):
                check_range(f"every `{name}` entry", value, 1, MAX_DEPTH)
        check_range("`block_out_channels[0]`", self.block_out_channels[0], 4)  # the timestep embedding
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise GenlabError(
                    f"`block_out_channels` holds {c}, which does not divide into {self.norm_num_groups} "
                    "GroupNorm groups (`norm_num_groups`)"
                )
        for i, heads in enumerate(self.num_attention_heads):
            attends = self.down_block_types[i].startswith("CrossAttn") or i == blocks - 1
            if attends and self.block_out_channels[i] % heads:
                raise GenlabError(
                    f"block {i} has {self.block_out_channels[i]} channels, which do not divide into "
                    f"{heads} attention heads (`attention_head_dim`)"
                )
        layers = sum(
            (2 * n + 1) * (1 + (self.transformer_layers_per_block[i] if self.attends(i) else 0))
            for i, n in enumerate(self.layers_per_block)
        )
        if layers > MAX_LAYERS:
            raise GenlabError(
                f"this U-Net config asks for about {layers} layers, more than the {MAX_LAYERS} genlab "
                "builds; check `layers_per_block` and `transformer_layers_per_block`"
            )

    def attends(self, i: int) -> bool:
        """Whether down block ``i`` (or the up block that mirrors it) has spatial transformers."""
        return self.down_block_types[i].startswith("CrossAttn")

    @property
    def downsampling(self) -> int:
        """How many times smaller the deepest feature map is than the input."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_diffusers(cls, data: Any, source: str = "the U-Net's config.json") -> SDUNetConfig:
        """The config of a diffusers ``UNet2DConditionModel`` (its ``config.json`` as a dict).

        ``attention_head_dim`` holds the number of heads, not their width: diffusers' own naming slip
        (huggingface/diffusers#2011), kept for the configs already written, so ``UNet2DConditionModel``
        sets ``num_attention_heads = num_attention_heads or attention_head_dim``. SD 1.x's 8 means 8
        heads of 40, 80, 160 and 160 channels; SD 2.x's list [5, 10, 20, 20] means 5 heads in the first
        block, 10 in the second..., all 64 wide, and the mid block takes the last entry.
        """
        if not isinstance(data, dict):
            raise GenlabError(f"{source} must be a JSON object of settings")
        # A key the file leaves out has diffusers' default; _class_name, _diffusers_version... say nothing.
        data = DIFFUSERS_DEFAULTS | {k: v for k, v in data.items() if not str(k).startswith("_")}
        fields: dict[str, Any] = {}
        for key, value in data.items():
            if key in IGNORED:
                continue
            if key in REQUIRED:
                if not _allowed(value, REQUIRED[key]):
                    raise GenlabError(
                        f"{source}: `{key}` is {value!r}; genlab runs the Stable Diffusion 1.x and 2.x "
                        f"U-Net, which has {REQUIRED[key][0]!r}"
                    )
            elif key not in ("attention_head_dim", "num_attention_heads"):
                fields[key] = value
        unknown = sorted(set(fields) - set(cls.__dataclass_fields__))
        if unknown:
            raise GenlabError(
                f"{source} has settings genlab does not know ({', '.join(unknown)}); it may be a newer "
                "diffusers' U-Net than SD 1.x and 2.x"
            )
        types = fields["down_block_types"]
        if not isinstance(types, list):
            raise GenlabError(f"{source}: `down_block_types` must be a list of block names")
        blocks = len(types)
        heads = data.get("num_attention_heads") or data["attention_head_dim"]
        fields["num_attention_heads"] = _per_block(heads, blocks, "attention_head_dim", source)
        for key in ("layers_per_block", "cross_attention_dim", "transformer_layers_per_block"):
            fields[key] = _per_block(fields[key], blocks, key, source)
        return config_from_dict(cls, fields, source)


def _allowed(value: Any, allowed: tuple[Any, ...]) -> bool:
    """Whether ``value`` (or each entry of a list) is one of ``allowed``, type and all (0 is not False)."""
    values = value if isinstance(value, list) else [value]
    return all(any(type(v) is type(a) and v == a for a in allowed) for v in values)


def _per_block(value: Any, blocks: int, name: str, source: str) -> list[Any]:
    """A setting diffusers accepts as one number for all blocks or as a list with one per block."""
    if isinstance(value, list):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return [value] * blocks
    raise GenlabError(f"{source}: `{name}` must be a whole number or a list of them, got {value!r}")


def timestep_embedding(
    t: torch.Tensor, dim: int, flip_sin_to_cos: bool, freq_shift: float, max_period: float = 10000.0
) -> torch.Tensor:
    """The sinusoidal timestep embedding of Ho et al. (2020) as diffusers' ``get_timestep_embedding``
    writes it: frequencies w_i = max_period^(-i / (dim/2 - freq_shift)), then [sin(t w), cos(t w)], or
    [cos, sin] with ``flip_sin_to_cos``. SD's setting (flip, shift 0) is exactly
    genlab.nn.embeddings.sinusoidal_embedding; a zero column pads an odd ``dim``."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device)
    args = t[:, None].float() * torch.exp(exponent / (half - freq_shift))[None, :]
    emb = torch.cat(
        [torch.cos(args), torch.sin(args)] if flip_sin_to_cos else [torch.sin(args), torch.cos(args)], 1
    )
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class TimestepEmbedding(nn.Module):
    """Linear-SiLU-Linear on the sinusoidal embedding (diffusers' ``TimestepEmbedding``)."""

    def __init__(self, c_in: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(c_in, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class GEGLU(nn.Module):
    """x W + b split in two halves h, g -> h * GELU(g) (Shazeer 2020, "GLU Variants Improve Transformer")."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU to 4x the width, dropout, Linear back: ``net.0.proj``, ``net.2``."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, 4 * dim), nn.Dropout(dropout), nn.Linear(4 * dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class TransformerBlock(nn.Module):
    """Pre-norm residual self-attention, cross-attention to the context, feed-forward (diffusers'
    ``BasicTransformerBlock``; LayerNorms with eps 1e-5)."""

    def __init__(self, dim: int, heads: int, context_dim: int, upcast: bool, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = SDAttention(dim, heads, upcast=upcast, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = SDAttention(dim, heads, context_dim, upcast=upcast, dropout=dropout)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """A feature map as tokens through transformer blocks, plus itself (diffusers' ``Transformer2DModel``
    on continuous input): GroupNorm (eps 1e-6), ``proj_in``, blocks, ``proj_out``. The projections are
    1x1 convolutions before the flattening (SD 1.x) or Linear layers after it (SD 2.x); the same
    products either way, in a different place."""

    def __init__(self, channels: int, heads: int, context_dim: int, layers: int, cfg: SDUNetConfig):
        super().__init__()
        self.linear = cfg.use_linear_projection
        self.norm = nn.GroupNorm(cfg.norm_num_groups, channels, eps=1e-6)
        proj = nn.Linear if self.linear else (lambda a, b: nn.Conv2d(a, b, 1))
        self.proj_in = proj(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(channels, heads, context_dim, cfg.upcast_attention, cfg.dropout)
            for _ in range(layers)
        )
        self.proj_out = proj(channels, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = self.norm(x)
        if not self.linear:
            tokens = self.proj_in(tokens)
        tokens = tokens.permute(0, 2, 3, 1).reshape(n, h * w, c)  # (N, HW, C); a view in channels_last
        if self.linear:
            tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        if self.linear:
            tokens = self.proj_out(tokens)
        out = tokens.reshape(n, h, w, c).permute(0, 3, 1, 2)
        if not self.linear:
            out = self.proj_out(out)
        return out + x


class DownBlock(nn.Module):
    """One resolution on the way down: ResBlocks, each followed by a spatial transformer in a
    CrossAttnDownBlock2D, then a stride-2 convolution unless it is the last. Every output is a skip."""

    def __init__(self, i: int, c_in: int, temb: int, cfg: SDUNetConfig):
        super().__init__()
        c = cfg.block_out_channels[i]
        n = cfg.layers_per_block[i]
        self.resnets = nn.ModuleList(
            ResnetBlock(c_in if j == 0 else c, c, temb, cfg.norm_num_groups, cfg.norm_eps, cfg.dropout)
            for j in range(n)
        )
        heads, ctx, layers = (
            cfg.num_attention_heads[i],
            cfg.cross_attention_dim[i],
            cfg.transformer_layers_per_block[i],
        )
        self.attentions = nn.ModuleList(
            SpatialTransformer(c, heads, ctx, layers, cfg) for _ in range(n if cfg.attends(i) else 0)
        )
        last = i == len(cfg.block_out_channels) - 1
        self.downsamplers = nn.ModuleList([] if last else [Downsample(c, cfg.downsample_padding)])

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor, skips: list[torch.Tensor]
    ) -> torch.Tensor:
        for j, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if len(self.attentions):
                x = self.attentions[j](x, context)
            skips.append(x)
        for down in self.downsamplers:
            x = down(x)
            skips.append(x)
        return x


class MidBlock(nn.Module):
    """ResBlock, spatial transformer, ResBlock at the lowest resolution (``UNetMidBlock2DCrossAttn``)."""

    def __init__(self, temb: int, cfg: SDUNetConfig):
        super().__init__()
        c = cfg.block_out_channels[-1]
        groups, eps, scale = cfg.norm_num_groups, cfg.norm_eps, cfg.mid_block_scale_factor
        self.resnets = nn.ModuleList(
            ResnetBlock(c, c, temb, groups, eps, cfg.dropout, scale) for _ in range(2)
        )
        heads, ctx, layers = (
            cfg.num_attention_heads[-1],
            cfg.cross_attention_dim[-1],
            cfg.transformer_layers_per_block[-1],
        )
        self.attentions = nn.ModuleList([SpatialTransformer(c, heads, ctx, layers, cfg)])

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        return self.resnets[1](self.attentions[0](x, context), temb)


class UpBlock(nn.Module):
    """One resolution on the way up, mirroring down block ``i``: one more ResBlock than going down, each
    taking a skip concatenated to its input (Ronneberger et al. 2015), each followed by a spatial
    transformer in a CrossAttnUpBlock2D, then an upsampling unless it is the last."""

    def __init__(self, i: int, c_prev: int, temb: int, cfg: SDUNetConfig):
        super().__init__()
        blocks = len(cfg.block_out_channels)
        down = blocks - 1 - i  # the down block at this resolution
        c = cfg.block_out_channels[down]
        c_skip_last = cfg.block_out_channels[max(down - 1, 0)]  # the skip from the resolution above
        n = cfg.layers_per_block[down] + 1
        self.resnets = nn.ModuleList(
            ResnetBlock(
                (c_prev if j == 0 else c) + (c_skip_last if j == n - 1 else c),
                c,
                temb,
                cfg.norm_num_groups,
                cfg.norm_eps,
                cfg.dropout,
            )
            for j in range(n)
        )
        heads, ctx = cfg.num_attention_heads[down], cfg.cross_attention_dim[down]
        layers = cfg.transformer_layers_per_block[down]
        self.attentions = nn.ModuleList(
            SpatialTransformer(c, heads, ctx, layers, cfg) for _ in range(n if cfg.attends(down) else 0)
        )
        self.upsamplers = nn.ModuleList([] if i == blocks - 1 else [Upsample(c)])

    def forward(
        self,
        x: torch.Tensor,
        skips: list[torch.Tensor],
        temb: torch.Tensor,
        context: torch.Tensor,
        size: torch.Size | None = None,
    ) -> torch.Tensor:
        """``skips``: this block's skips, the last one first to be used; ``size``: the upsampled size."""
        for j, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
            if len(self.attentions):
                x = self.attentions[j](x, context)
        for up in self.upsamplers:
            x = up(x, size)
        return x


class SDUNet(SizedModule):
    """``forward(sample, timestep, encoder_hidden_states)``: a (N, in_channels, h, w) latent, timesteps
    (N,) or one for all (a 0-d tensor or a number), the text encoder's (N, S, cross_attention_dim)
    states -> the (N, out_channels, h, w) prediction. Any h, w: odd sides are met by upsampling to the
    skip's size, as diffusers does."""

    def __init__(self, config: SDUNetConfig):
        super().__init__()
        self.config = cfg = config
        c0 = cfg.block_out_channels[0]
        temb = cfg.time_embedding_dim or 4 * c0
        self.conv_in = nn.Conv2d(cfg.in_channels, c0, 3, padding=1)
        self.time_embedding = TimestepEmbedding(c0, temb)
        self.down_blocks = nn.ModuleList()
        c = c0
        for i, c_out in enumerate(cfg.block_out_channels):
            self.down_blocks.append(DownBlock(i, c, temb, cfg))
            c = c_out
        self.mid_block = MidBlock(temb, cfg)
        self.up_blocks = nn.ModuleList()
        for i, c_out in enumerate(reversed(cfg.block_out_channels)):
            self.up_blocks.append(UpBlock(i, c, temb, cfg))
            c = c_out
        self.conv_norm_out = nn.GroupNorm(cfg.norm_num_groups, c0, eps=cfg.norm_eps)
        self.conv_out = nn.Conv2d(c0, cfg.out_channels, 3, padding=1)

    def attention_layers(self, cross: bool = True) -> list[SDAttention]:
        """The cross-attention modules (``cross=True``) or the self-attention ones, in forward order."""
        return [m for m in self.modules() if isinstance(m, SDAttention) and m.is_cross == cross]

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
    ) -> torch.Tensor:
        cfg = self.config
        n = sample.shape[0]
        t = torch.as_tensor(timestep, device=sample.device)
        t = t[None] if t.ndim == 0 else t
        if t.ndim != 1 or t.shape[0] not in (1, n):
            raise ValueError(
                f"timestep must be a number or hold one per sample ({n}), got shape {tuple(t.shape)}"
            )
        t = t.expand(n)
        if cfg.center_input_sample:
            sample = 2 * sample - 1.0
        c0 = cfg.block_out_channels[0]
        emb = timestep_embedding(t, c0, cfg.flip_sin_to_cos, cfg.freq_shift).to(sample.dtype)
        emb = self.time_embedding(emb)

        x = self.conv_in(sample)
        skips = [x]
        for down in self.down_blocks:
            x = down(x, emb, encoder_hidden_states, skips)
        x = self.mid_block(x, emb, encoder_hidden_states)
        # A side not divisible by the total downsampling was rounded up on the way down; going up,
        # each upsampling then aims at the size of the skip it meets next, not at twice its input.
        odd = any(side % cfg.downsampling for side in sample.shape[-2:])
        for up in self.up_blocks:
            own = skips[-len(up.resnets) :]
            del skips[-len(up.resnets) :]
            size = skips[-1].shape[-2:] if odd and len(up.upsamplers) else None
            x = up(x, own, emb, encoder_hidden_states, size)
        return self.conv_out(F.silu(self.conv_norm_out(x)))
