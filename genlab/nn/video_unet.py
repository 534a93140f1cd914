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

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from genlab.checks import MAX_FRAMES, MAX_WIDTH, check_range
from genlab.errors import GenlabError
from genlab.nn.pretrained import PretrainedMixin
from genlab.nn.unet import ResBlock, UNet, UNetConfig, with_coordinates

# Channels per GroupNorm group in the per-frame level (as in the default U-Net's first level, 32 channels
# in 8 groups). A group of one channel would remove the timestep embedding a ResBlock adds to it.
FRAME_GROUP = 4


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
    # what the temporal layers buy)
    temporal: bool = True
    # A residual 3x3x3 convolution over (frames, rows, columns) after each temporal attention: it moves
    # features from frame to frame *and* across pixels, which a motion needs and attention at one pixel
    # cannot do alone (the 3-D conv temporal layers of Blattmann et al. 2023, section 3.1)
    temporal_conv: bool = False
    # > 0: the clip's frames stacked as channels of one image (Voleti et al. 2022, "MCVD", section 3): a 2-D
    # U-Net of stack_frames * in_channels channels sees every frame at once; clips have exactly this many
    # frames and there are no temporal layers
    stack_frames: int = 0
    # With stack_frames: one more input channel, a plane of ones where frame 0 is given clean (image-to-
    # video: the first frame concatenated to the input, as Emu Video and Stable Video Diffusion give their
    # image). A given clip comes with timestep 0 for frame 0 (``with_first_frame``); the clip's own is its
    # last frame's
    first_frame_input: bool = False
    # With stack_frames: > 0, the full-size level runs on every frame alone, with this many channels and
    # weights shared by the frames (``FrameLevel``), and the frames are stacked only at half size: `unet`
    # then describes the stacked U-Net below it (its levels start at half the frames' size). Each frame
    # keeps channels of its own where the detail is; 0: the frames are stacked at full size
    frame_channels: int = 0
    # With frame_channels: False, the frames are stacked at full size as without it (`unet` describes the
    # stacked U-Net at the frames' size) and the per-frame level sits around the stack: each frame's share
    # of the stacked U-Net's output (frame_channels channels) is decoded beside that frame's own features
    frame_downsample: bool = True
    # > 0: autoregressive (Voleti et al. 2022, "MCVD", section 3: the past frames as input channels): the
    # network draws one frame given up to this many frames before it, clean, stacked as channels beside
    # the noisy frame with a plane each saying whether that frame exists (at the start of a clip it does
    # not), and a clip is drawn frame by frame; `unet` is that frame's 2-D U-Net. With `temporal` False
    # (the ablation) every past frame reads as missing: each frame is drawn from the condition alone
    past_frames: int = 0

    def __post_init__(self) -> None:
        check_range("max_frames", self.max_frames, 1, MAX_FRAMES)
        check_range("stack_frames", self.stack_frames, 0, self.max_frames)
        check_range("past_frames", self.past_frames, 0, self.max_frames - 1)
        if self.past_frames and self.stack_frames:
            raise GenlabError(
                "`past_frames` draws one frame at a time and `stack_frames` a whole clip at once: set one "
                "of them to 0"
            )
        check_range("frame_channels", self.frame_channels, 0, MAX_WIDTH)
        if self.frame_channels:
            if not self.stack_frames:
                raise GenlabError(
                    "`frame_channels` is the per-frame full-size level of the frame-stacking U-Net: set "
                    "`stack_frames` too, or `frame_channels` to 0"
                )
            if self.frame_channels % FRAME_GROUP:
                raise GenlabError(
                    f"`frame_channels` must be a multiple of {FRAME_GROUP} (GroupNorm groups of "
                    f"{FRAME_GROUP} channels), got {self.frame_channels}"
                )
            if self.frame_downsample and self.unet.image_size % (2 * self.unet.downsampling):
                raise GenlabError(
                    f"frames of {self.unet.image_size} px do not halve into the stacked U-Net's "
                    f"{len(self.unet.channel_mults)} levels; resize the data or use fewer `channel_mults`"
                )
        if self.first_frame_input and not self.stack_frames:
            raise GenlabError(
                "`first_frame_input` is for the frame-stacking U-Net (`stack_frames` > 0); the factorised "
                "one takes a given first frame at its own noise level"
            )
        levels = len(self.unet.channel_mults)
        for level in () if self.stack_frames or self.past_frames else self.temporal_levels or ():
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
        """The levels that hold temporal attention (none when the frames are stacked: no temporal layers)."""
        if not self.temporal or self.stack_frames or self.past_frames:
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


class TemporalConv(nn.Module):
    """A residual 3-D convolution over (frames, rows, columns), pre-norm: x + Conv3d(SiLU(GroupNorm(x))), the
    3-D conv temporal layer of Blattmann et al. (2023, "Align your Latents", section 3.1). A 3x3x3 kernel
    takes frame i - 1, i and i + 1 at neighbouring pixels, so stacked ones carry an object from where it is
    in one frame to where it moves in the next. The clip's ends are padded with zeros (frames see both
    ways, no causality). Zero-initialised, so a new layer is the identity."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.conv = nn.Conv3d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor, frames: int, keep: torch.Tensor | None = None) -> torch.Tensor:
        """As TemporalAttention.forward: ``x`` (N * T, C, H, W); ``keep`` False on clips of images."""
        clips = batch_to_frames(F.silu(self.norm(x)), frames).transpose(1, 2)  # (N, C, T, H, W)
        out = frames_to_batch(self.conv(clips).transpose(1, 2))
        if keep is not None:
            out = out * keep.repeat_interleave(frames).to(out.dtype)[:, None, None, None]
        return x + out


class TemporalLayer(nn.Module):
    """What follows a block where frames meet: a temporal attention, then (``temporal_conv``) a 3-D conv."""

    def __init__(self, channels: int, cfg: VideoUNetConfig):
        super().__init__()
        self.attn = TemporalAttention(channels, cfg.head_dim, cfg.unet.groups, cfg.max_distance)
        self.conv = TemporalConv(channels, cfg.unet.groups) if cfg.temporal_conv else None

    def forward(self, x: torch.Tensor, frames: int, keep: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attn(x, frames, keep)
        return x if self.conv is None else self.conv(x, frames, keep)


class FrameLevel(nn.Module):
    """The full-size level of a frame-stacking U-Net (``frame_channels``), run on every frame alone.

    Stacking the frames as channels (MCVD) mixes them in every convolution, which a motion needs, but at
    full size it leaves a few channels per frame for the detail: the x0 a narrow stacked U-Net estimates
    is soft even from a nearly clean clip. Here each frame gets a level of its own at full size, as the
    per-frame 2-D layers of Ho et al. (2022) do, and is halved in size before the frames are stacked,
    as the per-frame autoencoder of latent video models does (Blattmann et al. 2023, "Align your Latents",
    section 3), but learned with the denoiser: ``encode`` maps a frame to half-size features and keeps its
    full-size ones, ``decode`` brings its share of the stacked U-Net's output back to full size beside
    them (skip connections, as in the U-Net's own levels). Without ``halve`` the stack is of the frames
    themselves at full size and the level sits around it. The blocks take each frame's own timestep, so
    a given first frame is known to be clean here too. The last convolution starts at zero.

    Measured (docs/video.md, sixth attempt): nearly clean clips keep their detail twice as often, clips
    drawn from noise are no sharper on moving-shapes, and moving-mnist's digits are recognised in 32% of
    frames against 12.5% without it.
    """

    def __init__(
        self, in_channels: int, out_channels: int, channels: int, emb_dim: int, cfg: UNetConfig, halve: bool
    ):
        super().__init__()
        self.coordinates = cfg.coordinates
        groups = channels // FRAME_GROUP
        self.conv_in = nn.Conv2d(in_channels + 2 * cfg.coordinates, channels, 3, padding=1)
        self.block_in = ResBlock(channels, channels, emb_dim, cfg.dropout, groups)
        self.down = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if halve else None
        self.up = nn.Conv2d(channels, channels, 3, padding=1) if halve else None
        self.blocks_out = nn.ModuleList(
            ResBlock(2 * channels, channels, emb_dim, cfg.dropout, groups) for _ in range(2)
        )
        self.norm_out = nn.GroupNorm(groups, channels)
        self.conv_out = nn.Conv2d(channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def encode(self, x: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Frames (B, C, S, S) and their embeddings (B, E) -> the half-size features to stack (the frames
        themselves when the level does not halve) and the full-size skips."""
        h0 = self.conv_in(with_coordinates(x) if self.coordinates else x)
        h1 = self.block_in(h0, emb)
        return (x if self.down is None else self.down(h1)), [h0, h1]

    def decode(self, h: torch.Tensor, skips: list[torch.Tensor], emb: torch.Tensor) -> torch.Tensor:
        """A frame's share of the stacked output (B, F, S/2, S/2), or (B, F, S, S) when the level does not
        halve, and ``encode``'s skips -> the frames' outputs at full size."""
        if self.up is not None:
            h = self.up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        for block in self.blocks_out:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))


def _frame_condition(
    unet: UNet,
    t: torch.Tensor,
    class_labels: torch.Tensor | None,
    context: torch.Tensor | None,
    context_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``unet``'s conditioning for every frame of N clips, from ``t`` (N, T) one timestep per frame and
    the clips' labels and prompts, each repeated for its clip's frames: (embedding, context, mask)."""
    frames = t.shape[1]
    labels = None if class_labels is None else class_labels.repeat_interleave(frames)
    if context is not None:
        context = context.repeat_interleave(frames, 0)
        if context_mask is not None:
            context_mask = context_mask.repeat_interleave(frames, 0)
    emb, context_mask = unet.condition(t.flatten(), labels, context, context_mask)
    return emb, context, context_mask


def _temporal_blocks(count: int, channels: int, present: bool, cfg: VideoUNetConfig) -> nn.ModuleList:
    """The temporal layers after the ``count`` ResBlocks of one level (none where it has no time)."""
    return nn.ModuleList(TemporalLayer(channels, cfg) for _ in range(count) if present)


class VideoUNet(PretrainedMixin, nn.Module):
    """``forward(x, t, class_labels=None, context=None, context_mask=None, temporal=True)``:
    x (N, T, C, H, W) -> (N, T, C_out, H, W); see the module's docstring."""

    kind = "video"
    config_class = VideoUNetConfig

    def __init__(self, config: VideoUNetConfig):
        super().__init__()
        self.config = cfg = config
        if cfg.stack_frames:
            k, c, f = cfg.stack_frames, cfg.unet.in_channels, cfg.frame_channels
            out, halve = cfg.unet.out_channels or c, bool(f) and cfg.frame_downsample
            self.stacked = UNet(
                replace(
                    cfg.unet,
                    in_channels=k * (f if halve else c) + int(cfg.first_frame_input),
                    out_channels=k * (f or out),
                    image_size=cfg.unet.image_size // (2 if halve else 1),
                )
            )
            emb_dim = self.stacked.time_mlp[-1].out_features  # the frames' blocks read the stack's embedding
            self.frame_level = FrameLevel(c, out, f, emb_dim, cfg.unet, halve) if f else None
            return
        if cfg.past_frames:
            c, p = cfg.unet.in_channels, cfg.past_frames
            out = cfg.unet.out_channels or c
            self.stacked = UNet(replace(cfg.unet, in_channels=c * (1 + p) + p, out_channels=out))
            return
        self.unet = UNet(cfg.unet)
        base, mults, blocks = cfg.unet.base_channels, cfg.unet.channel_mults, cfg.unet.num_res_blocks
        timed = cfg.levels_with_time
        self.down_time = nn.ModuleList(
            _temporal_blocks(blocks, base * m, i in timed, cfg) for i, m in enumerate(mults)
        )
        self.mid_time = TemporalLayer(base * mults[-1], cfg) if cfg.temporal else None
        self.up_time = nn.ModuleList(
            _temporal_blocks(blocks + 1, base * m, i in timed, cfg)
            for i, m in reversed(list(enumerate(mults)))
        )

    def _stacked_forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        class_labels: torch.Tensor | None,
        context: torch.Tensor | None,
        context_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """``forward`` of the frame-stacking U-Net (with its per-frame full-size level when it has one)."""
        n, frames = x.shape[:2]
        per_frame = t.ndim == 2  # frames 1.. share the clip's noise level; frame 0 may be given (timestep 0)
        clip_t = t[:, -1] if per_frame else t.reshape(-1).expand(n)
        frame_t = t if per_frame else clip_t[:, None].expand(n, frames)
        given = (frame_t[:, 0] == 0) & (clip_t != 0)
        level = self.frame_level
        if level is None:
            stacked = x.flatten(1, 2)
        else:
            emb = _frame_condition(self.stacked, frame_t, class_labels, context, context_mask)[0]
            h, skips = level.encode(frames_to_batch(x), emb)
            stacked = batch_to_frames(h, frames).flatten(1, 2)
        if self.config.first_frame_input:
            plane = given.to(x)[:, None, None, None].expand(n, 1, *stacked.shape[-2:])
            stacked = torch.cat([stacked, plane], dim=1)
        out = self.stacked(stacked, clip_t, class_labels, context, context_mask).unflatten(1, (frames, -1))
        if level is None:
            return out
        return batch_to_frames(level.decode(frames_to_batch(out), skips, emb), frames)

    def _past_forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        class_labels: torch.Tensor | None,
        context: torch.Tensor | None,
        context_mask: torch.Tensor | None,
        past: torch.Tensor | None,
        past_given: torch.Tensor | None,
    ) -> torch.Tensor:
        """``forward`` of the autoregressive U-Net: one frame given the ones before it."""
        n, frames, c, h, w = x.shape
        p = self.config.past_frames
        if frames != 1:
            raise GenlabError(
                f"this video U-Net draws one frame at a time given the {p} before it; got {frames} frames"
            )
        if past is None or past_given is None:
            past = x.new_zeros(n, p, c, h, w)
            past_given = torch.zeros(n, p, dtype=torch.bool, device=x.device)
        if tuple(past.shape) != (n, p, c, h, w) or tuple(past_given.shape) != (n, p):
            raise GenlabError(
                f"`past` must be (N, {p}, C, H, W) = {(n, p, c, h, w)} and `past_given` ({n}, {p}); got "
                f"{tuple(past.shape)} and {tuple(past_given.shape)}"
            )
        given = past_given.to(x) * float(self.config.temporal)  # the ablation never sees the past
        frames_in = (past.to(x) * given[:, :, None, None, None]).flatten(1, 2)  # absent frames are zeros
        planes = given[:, :, None, None].expand(n, p, h, w)
        clip_t = t.reshape(-1).expand(n) if t.ndim < 2 else t[:, -1]
        inp = torch.cat([x[:, 0], frames_in, planes], dim=1)
        return self.stacked(inp, clip_t, class_labels, context, context_mask)[:, None]

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
        past: torch.Tensor | None = None,
        past_given: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x`` (N, T, C, H, W) noisy clips; ``t`` a scalar, (N,) one timestep per clip, or (N, T) one per
        frame; ``class_labels`` (N,), None for the "no class" of guidance; ``context`` (N, S, context_dim)
        and ``context_mask`` (N, S): a text-conditional U-Net's prompt tokens; ``temporal``: False, or an
        (N,) bool mask False on some clips, makes those clips' frames independent images. An autoregressive
        U-Net (``past_frames`` P) takes one noisy frame (T = 1), the ``past`` (N, P, C, H, W) frames before
        it, clean in model space, the nearest last, and ``past_given`` (N, P) bool, False where a clip has
        no such frame yet (both None: no past at all, the first frame of a clip)."""
        if x.ndim != 5:
            raise GenlabError(
                f"a video U-Net takes clips (N, T, C, H, W), got a tensor of shape {tuple(x.shape)}"
            )
        n, frames = x.shape[:2]
        check_range("the number of frames", frames, 1, self.config.max_frames)
        if self.config.past_frames:
            return self._past_forward(x, t, class_labels, context, context_mask, past, past_given)
        if self.config.stack_frames:
            if frames != self.config.stack_frames:
                raise GenlabError(
                    f"this video U-Net stacks {self.config.stack_frames} frames as channels, so its clips "
                    f"have exactly {self.config.stack_frames} frames; got {frames}"
                )
            return self._stacked_forward(x, t, class_labels, context, context_mask)
        keep = self._keep(temporal, n)
        unet = self.unet
        # Everything below runs on frames: conditioning repeated for every frame of its clip.
        if t.ndim < 2:  # one timestep per clip (or for all): the same for each of its frames
            t = t.reshape(-1, 1).expand(n, frames)
        if t.shape != (n, frames):
            raise GenlabError(f"`t` must hold one timestep per clip or per frame, got shape {tuple(t.shape)}")
        emb, context, context_mask = _frame_condition(unet, t, class_labels, context, context_mask)
        timed = {"down": self.down_time, "up": self.up_time}

        def mix(h: torch.Tensor, path: str, i: int, j: int) -> torch.Tensor:
            block = self.mid_time if path == "mid" else (timed[path][i][j] if len(timed[path][i]) else None)
            if keep is False or block is None:
                return h
            return block(h, frames, None if keep is True else keep)

        return batch_to_frames(unet.trunk(frames_to_batch(x), emb, context, context_mask, mix), frames)
