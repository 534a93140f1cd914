"""The factorised space-time U-Net of Ho et al. (2022, "Video Diffusion Models", section 3).

A video is a batch of frames that see each other. Every 2-D layer of genlab's diffusion U-Net
(``genlab.nn.unet``: its ResBlocks, spatial self-attention and cross-attention, embeddings) runs on each
frame alone, the frames folded into the batch; after the blocks of the chosen levels (and in the middle)
a temporal attention lets the T frames at each spatial position attend to each other, with a learned
bias per relative offset between frames (clipped at +-``max_distance``, after the relative positions of
Shaw et al. 2018 and T5) so that the network knows the order of the frames without an absolute clock.

The temporal attention's output projection starts at zero, so a freshly built video U-Net is exactly the
image U-Net applied frame by frame, and the 2-D weights live in ``self.unet``, a plain ``UNet``: image
weights load into it unchanged. For joint image and video training (Ho et al., section 3.1) the temporal
attention can be switched off for the whole batch (``temporal=False``) or per sample (a boolean mask):
it is then the identity, and a "clip" of T unrelated images is denoised as T images by the very network
that denoises videos. (Ho et al. mask the attention so that each frame sees only itself; the identity is
stricter: with it the masked samples get exactly the image U-Net's output, whatever the temporal weights.)

Layout: videos are (N, T, C, H, W), as genlab's video data sets hold them; frame ``i`` of sample ``n`` is
row ``n * T + i`` of the folded batch (``frames_to_batch``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from genlab.checks import MAX_FRAMES, MAX_WIDTH, check_range
from genlab.errors import GenlabError
from genlab.nn.attention import masked_mean
from genlab.nn.pretrained import PretrainedMixin
from genlab.nn.unet import UNet, UNetConfig, with_coordinates


@dataclass
class VideoUNetConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)  # the 2-D U-Net applied to every frame
    max_frames: int = 64  # the longest clip the network takes
    # Levels (0 = full resolution) with a temporal attention after each ResBlock (after its spatial
    # attention where it has one); the middle always has one (when `temporal`). None: the U-Net's
    # attention levels.
    temporal_levels: tuple[int, ...] | None = None
    temporal_head_dim: int | None = None  # width of a temporal attention head (None: the U-Net's head_dim);
    # each temporal attention has channels / temporal_head_dim heads, as the spatial ones do
    max_distance: int = 8  # frame offsets beyond +-max_distance share the bias of +-max_distance
    # False: no temporal layers at all, the image U-Net on every frame alone (the ablation that measures
    # what the temporal attention buys)
    temporal: bool = True

    def __post_init__(self) -> None:
        check_range("max_frames", self.max_frames, 1, MAX_FRAMES)
        levels = len(self.unet.channel_mults)
        for level in self.temporal_levels or ():
            check_range("every `temporal_levels` entry", level, 0, levels - 1)
        if self.temporal_head_dim is not None:
            check_range("temporal_head_dim", self.temporal_head_dim, 1, MAX_WIDTH)
        check_range("max_distance", self.max_distance, 1, MAX_FRAMES)
        if self.unet.lowres_channels:
            raise GenlabError(
                "`lowres_channels` must be 0 in a video U-Net's `unet` (no video super-resolution)"
            )

    @property
    def levels_with_time(self) -> tuple[int, ...]:
        """The levels that hold temporal attention."""
        if not self.temporal:
            return ()
        return self.unet.attention_levels if self.temporal_levels is None else self.temporal_levels

    @property
    def context_dim(self) -> int:
        """Width of the text tokens the per-frame cross-attention reads (0: none)."""
        return self.unet.context_dim

    @property
    def num_classes(self) -> int:
        return self.unet.num_classes

    @property
    def in_channels(self) -> int:
        return self.unet.in_channels

    @property
    def image_size(self) -> int:
        return self.unet.image_size

    @property
    def head_dim(self) -> int:
        return self.unet.head_dim if self.temporal_head_dim is None else self.temporal_head_dim


def frames_to_batch(video: torch.Tensor) -> torch.Tensor:
    """(N, T, ...) -> (N * T, ...): every frame a sample of its own (a view, no copy when contiguous)."""
    return video.flatten(0, 1)


def batch_to_frames(batch: torch.Tensor, frames: int) -> torch.Tensor:
    """(N * T, ...) -> (N, T, ...): the inverse of ``frames_to_batch``."""
    return batch.unflatten(0, (-1, frames))


class TemporalAttention(nn.Module):
    """Multi-head self-attention among the T frames at each spatial position, pre-norm and residual.

    softmax(Q K^T / sqrt(d) + B) V per head (Vaswani et al. 2017, eq. 1), with B[i, j] a learned bias per
    head for the offset j - i of key frame j from query frame i, clipped at +-``max_distance`` (the relative
    position bias of Ho et al. 2022, section 3, after T5, Raffel et al. 2020, section 2.1). The bias starts
    at zero, and the output projection too, so a new block is the identity.
    """

    def __init__(self, channels: int, head_dim: int, groups: int, max_distance: int):
        super().__init__()
        if channels % head_dim:
            raise GenlabError(
                f"`temporal_head_dim` {head_dim} does not divide a temporal attention's {channels} channels"
            )
        self.heads = channels // head_dim
        self.max_distance = max_distance
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.bias = nn.Parameter(torch.zeros(self.heads, 2 * max_distance + 1))  # offsets -M..M

    def position_bias(self, frames: int) -> torch.Tensor:
        """(heads, T, T): entry [h, i, j] is head h's bias for query frame i attending to key frame j."""
        pos = torch.arange(frames, device=self.bias.device)
        offset = (pos[None, :] - pos[:, None]).clamp(-self.max_distance, self.max_distance)
        return self.bias[:, offset + self.max_distance]

    def forward(self, x: torch.Tensor, frames: int, keep: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (N * T, C, H, W), frames folded into the batch; ``keep`` (N,) bool: False for the samples
        whose frames do not see each other (the block is the identity on them); None: all see."""
        nt, c, h, w = x.shape
        n, hw = nt // frames, h * w
        # The frames at each position as a sequence: (N * H * W, T, C).
        tokens = self.norm(x).reshape(n, frames, c, hw).permute(0, 3, 1, 2).reshape(n * hw, frames, c)
        q, k, v = (
            self.qkv(tokens).reshape(n * hw, frames, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        )
        bias = self.position_bias(frames).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (N * H * W, heads, T, d)
        out = self.proj(out.transpose(1, 2).reshape(n * hw, frames, c))
        out = out.reshape(n, hw, frames, c).permute(0, 2, 3, 1).reshape(nt, c, h, w)
        if keep is not None:
            out = out * keep.repeat_interleave(frames).to(out.dtype)[:, None, None, None]
        return x + out


def _temporal_blocks(count: int, channels: int, present: bool, cfg: VideoUNetConfig) -> nn.ModuleList:
    """The temporal attentions after the ``count`` ResBlocks of one level (none where it has no time)."""
    return nn.ModuleList(
        TemporalAttention(channels, cfg.head_dim, cfg.unet.groups, cfg.max_distance)
        for _ in range(count)
        if present
    )


class VideoUNet(PretrainedMixin, nn.Module):
    """``forward(x, t, class_labels=None, context=None, context_mask=None, temporal=True)``:
    x (N, T, C, H, W) -> (N, T, C_out, H, W); see the module's docstring."""

    kind = "video"
    config_class = VideoUNetConfig

    def __init__(self, config: VideoUNetConfig):
        super().__init__()
        self.config = cfg = config
        self.unet = UNet(cfg.unet)
        base, mults, blocks = cfg.unet.base_channels, cfg.unet.channel_mults, cfg.unet.num_res_blocks
        timed = cfg.levels_with_time
        self.down_time = nn.ModuleList(
            _temporal_blocks(blocks, base * m, i in timed, cfg) for i, m in enumerate(mults)
        )
        self.mid_time = (
            TemporalAttention(base * mults[-1], cfg.head_dim, cfg.unet.groups, cfg.max_distance)
            if cfg.temporal
            else None
        )
        self.up_time = nn.ModuleList(
            _temporal_blocks(blocks + 1, base * m, i in timed, cfg)
            for i, m in reversed(list(enumerate(mults)))
        )

    def _keep(self, temporal: bool | torch.Tensor, n: int) -> torch.Tensor | bool:
        """True (all frames see each other), False (none do), or an (N,) bool mask."""
        if isinstance(temporal, bool):
            return temporal
        if temporal.dtype != torch.bool or temporal.shape != (n,):
            raise GenlabError(f"`temporal` must be True, False or {n} booleans, one per clip")
        return temporal

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        temporal: bool | torch.Tensor = True,
    ) -> torch.Tensor:
        """``x`` (N, T, C, H, W) noisy clips; ``t`` a scalar, (N,) one timestep per clip, or (N, T) one per
        frame; ``class_labels`` (N,), None for the "no class" of guidance; ``context`` (N, S, context_dim)
        and ``context_mask`` (N, S): a text-conditional U-Net's prompt tokens; ``temporal``: False, or an
        (N,) bool mask False on some clips, makes those clips' frames independent images."""
        if x.ndim != 5:
            raise GenlabError(
                f"a video U-Net takes clips (N, T, C, H, W), got a tensor of shape {tuple(x.shape)}"
            )
        n, frames = x.shape[:2]
        check_range("the number of frames", frames, 1, self.config.max_frames)
        keep = self._keep(temporal, n)
        unet = self.unet
        # Everything below runs on frames: conditioning repeated for every frame of its clip.
        if t.ndim < 2:  # one timestep per clip (or for all): the same for each of its frames
            t = t.reshape(-1, 1).expand(n, frames)
        if t.shape != (n, frames):
            raise GenlabError(f"`t` must hold one timestep per clip or per frame, got shape {tuple(t.shape)}")
        emb = unet.embed(
            t.flatten(), None if class_labels is None else class_labels.repeat_interleave(frames)
        )
        if unet.context_emb is not None:
            if context is None:
                raise GenlabError("this U-Net is text-conditional: it needs the prompt's token states")
            if context_mask is None:
                context_mask = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
            context, context_mask = (
                context.repeat_interleave(frames, 0),
                context_mask.repeat_interleave(frames, 0),
            )
            emb = emb + unet.context_emb(masked_mean(context, context_mask))

        def time(block: nn.Module | None, h: torch.Tensor) -> torch.Tensor:
            if keep is False or block is None:
                return h
            return block(h, frames, None if keep is True else keep)

        # The 2-D U-Net's forward (genlab.nn.unet.UNet.forward), a temporal attention after each attention.
        xf = frames_to_batch(x)
        h = unet.conv_in(with_coordinates(xf) if unet.config.coordinates else xf)
        hs = [h]
        for i, level in enumerate(unet.down):
            for j, block in enumerate(level.blocks):
                h = level.attend(j, block(h, emb), context, context_mask)
                if len(self.down_time[i]):
                    h = time(self.down_time[i][j], h)
                hs.append(h)
            if i < len(unet.downsample):
                h = unet.downsample[i](h)
                hs.append(h)
        h = unet.mid_attn(unet.mid1(h, emb))
        if unet.mid_cross is not None:
            h = unet.mid_cross(h, context, context_mask)
        h = unet.mid2(time(self.mid_time, h), emb)
        for i, level in enumerate(unet.up):
            for j, block in enumerate(level.blocks):
                h = level.attend(j, block(torch.cat([h, hs.pop()], dim=1), emb), context, context_mask)
                if len(self.up_time[i]):
                    h = time(self.up_time[i][j], h)
            if i < len(unet.upsample):
                h = unet.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return batch_to_frames(unet.conv_out(F.silu(unet.norm_out(h))), frames)
