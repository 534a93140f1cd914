"""A diffusion transformer on spacetime patches: Sora's "spacetime patches" (Brooks et al. 2024, "Video
generation models as world simulators") on the DiT of Peebles & Xie (2023).

A clip (N, T, C, H, W) is cut into tubelets of t frames x p x p pixels (the tubelet embedding of ViViT,
Arnab et al. 2021, section 3.1), each tubelet one token, and all T/t * H/p * W/p tokens attend to each
other in genlab's DiT blocks (full spacetime attention), conditioned by adaLN-Zero on the timestep, class
and pooled prompt, with cross-attention to the prompt's tokens, exactly as the image DiT is.

A tubelet of t frames of C channels is a p x p patch of t * C channels, so the network *is*
``genlab.nn.dit.DiT`` with ``in_channels = t * C`` and ``out_channels = t * C_out``, kept as ``self.dit``
(its weights, names and initialisation unchanged): the frames are folded into the batch in groups of t,
patched by the DiT's own ``patchify``, and the groups' tokens put side by side into one sequence. The only
addition is a fixed position embedding over time, added to the DiT's 2-D one: the sinusoidal embedding of
the tubelet's index minus that of index 0, so that the first tubelet carries the DiT's positions alone.
With t = 1 and T = 1 the network computes what the image DiT computes on that frame, given its weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genlab.checks import MAX_CLASSES, MAX_DEPTH, MAX_FRAMES, MAX_SIDE, MAX_WIDTH, check_range
from genlab.errors import GenlabError
from genlab.nn.dit import DiT, DiTConfig, patchify, unpatchify
from genlab.nn.embeddings import sinusoidal_embedding
from genlab.nn.pretrained import PretrainedMixin


@dataclass
class VideoDiTConfig:
    in_channels: int = 1
    frames: int = 8  # the longest clip the network takes (shorter ones: any multiple of `tubelet`)
    image_size: int = 16  # the side of a (square) frame
    tubelet: int = 2  # frames per spacetime patch (t)
    patch_size: int = 2  # pixels on a side of a spacetime patch (p)
    width: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 0  # > 0: class-conditional, with one extra "no class" entry for guidance
    context_dim: int = 0  # > 0: cross-attention to text tokens of this width
    out_channels: int = 0  # 0: same as in_channels

    def __post_init__(self) -> None:
        check_range("frames", self.frames, 1, MAX_FRAMES)
        check_range("tubelet", self.tubelet, 1, self.frames)
        check_range("in_channels", self.in_channels, 1, MAX_WIDTH // self.tubelet)
        check_range("out_channels", self.out_channels, 0, MAX_WIDTH // self.tubelet)
        check_range("image_size", self.image_size, 1, MAX_SIDE)
        check_range("patch_size", self.patch_size, 1, self.image_size)
        check_range("width", self.width, 2, MAX_WIDTH)
        check_range("depth", self.depth, 1, MAX_DEPTH)
        check_range("heads", self.heads, 1, self.width)
        check_range("num_classes", self.num_classes, 0, MAX_CLASSES)
        check_range("context_dim", self.context_dim, 0, MAX_WIDTH)
        if self.frames % self.tubelet:
            raise GenlabError(f"`frames` ({self.frames}) must be a multiple of `tubelet` ({self.tubelet})")
        if self.image_size % self.patch_size:
            raise GenlabError(
                f"`image_size` ({self.image_size}) must be a multiple of `patch_size` ({self.patch_size})"
            )
        if self.width % 4:  # half the width for rows, half for columns, each a sin/cos pair
            raise GenlabError(f"`width` must be a multiple of 4 (got {self.width})")
        self.image_config()  # the DiT's own checks (heads dividing the width, mlp_ratio)

    def image_config(self) -> DiTConfig:
        """The image DiT this network is: a tubelet of t frames of C channels is a patch of t * C."""
        t = self.tubelet
        return DiTConfig(
            in_channels=self.in_channels * t,
            image_size=self.image_size,
            patch_size=self.patch_size,
            width=self.width,
            depth=self.depth,
            heads=self.heads,
            mlp_ratio=self.mlp_ratio,
            num_classes=self.num_classes,
            context_dim=self.context_dim,
            out_channels=(self.out_channels or self.in_channels) * t,
        )


def patchify_video(x: torch.Tensor, t: int, p: int) -> torch.Tensor:
    """(N, T, C, H, W) -> (N, T/t * H/p * W/p, t * C * p * p): tokens ordered by time, then row, then
    column; each tubelet flattened frame-first, then channel, row, column."""
    n, frames, c, h, w = x.shape
    groups = x.reshape(n * (frames // t), t * c, h, w)  # t consecutive frames stacked as channels
    tokens = patchify(groups, p)
    return tokens.reshape(n, -1, tokens.shape[-1])


def unpatchify_video(tokens: torch.Tensor, t: int, p: int, channels: int, size: int) -> torch.Tensor:
    """The inverse of ``patchify_video`` for square frames of side ``size``: -> (N, T, channels, H, W)."""
    n, per_group = tokens.shape[0], (size // p) ** 2
    groups = unpatchify(tokens.reshape(-1, per_group, tokens.shape[-1]), p, t * channels, size)
    return groups.reshape(n, -1, channels, size, size)


def positions_time(slots: int, dim: int) -> torch.Tensor:
    """Fixed sinusoidal positions over time (slots, dim), zero at slot 0: added to the DiT's 2-D ones, the
    first tubelet sees exactly the image DiT's position embedding."""
    index = torch.arange(slots).float()
    return sinusoidal_embedding(index, dim) - sinusoidal_embedding(torch.zeros(1), dim)


class VideoDiT(PretrainedMixin, nn.Module):
    """``forward(x, t, class_labels=None, context=None, context_mask=None)`` with ``x`` (N, T, C, H, W)
    -> (N, T, C_out, H, W); T at most ``frames`` and a multiple of ``tubelet``."""

    kind = "video"  # as genlab.nn.video_unet.VideoUNet: a video run, not an image one
    config_class = VideoDiTConfig

    def __init__(self, config: VideoDiTConfig):
        super().__init__()
        self.config = cfg = config
        self.dit = DiT(cfg.image_config())
        slots = cfg.frames // cfg.tubelet
        self.register_buffer("pos_time", positions_time(slots, cfg.width), persistent=False)

    def positions(self, slots: int) -> torch.Tensor:
        """(slots * H/p * W/p, width): the DiT's 2-D positions plus the time of each tubelet."""
        return (self.pos_time[:slots, None, :] + self.dit.pos[None]).flatten(0, 1)

    def forward(self, x, t, class_labels=None, context=None, context_mask=None) -> torch.Tensor:
        cfg = self.config
        if x.ndim != 5 or x.shape[2] != cfg.in_channels or x.shape[-2:] != (cfg.image_size,) * 2:
            raise GenlabError(
                f"a clip must be (N, T, {cfg.in_channels}, {cfg.image_size}, {cfg.image_size}), "
                f"got {tuple(x.shape)}"
            )
        frames = x.shape[1]
        if frames % cfg.tubelet or not 1 <= frames <= cfg.frames:
            raise GenlabError(
                f"a clip's frames must be a multiple of `tubelet` ({cfg.tubelet}) up to `frames` "
                f"({cfg.frames}), got {frames}"
            )
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        dit = self.dit
        c = dit.condition(t, class_labels, context, context_mask)
        h = dit.embed(patchify_video(x, cfg.tubelet, cfg.patch_size))
        h = dit.transform(h + self.positions(frames // cfg.tubelet), c, context, context_mask)
        channels = cfg.out_channels or cfg.in_channels
        return unpatchify_video(h, cfg.tubelet, cfg.patch_size, channels, cfg.image_size)
