"""A small 3-D convolutional clip classifier: the domain features of FVD for genlab's clip data sets.

FVD (Unterthiner et al. 2018, "Towards Accurate Generative Models of Video") reads clips with I3D, a
3-D convolutional network trained on Kinetics (Carreira & Zisserman 2017), and compares Gaussians fitted to
its pooled features. On 8-frame clips of a shape or a digit sliding over a plain background those features
say little; as FID uses the data's own classifier in genlab (genlab.evaluation.features), FVD uses this
network trained on the clips' own labels (the motion's direction, the digit). Its space-time convolutions
see motion that no single frame shows; ``features(x)`` is the global average of its last block.

Clips (N, T, C, H, W) in [0, 1]; normalisation inside the model, as in genlab.nn.classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genlab.checks import MAX_CLASSES, MAX_DEPTH, MAX_FRAMES, MAX_SIDE, MAX_WIDTH, check_range
from genlab.errors import GenlabError
from genlab.nn.pretrained import PretrainedMixin


@dataclass
class VideoClassifierConfig:
    in_channels: int = 3
    image_size: int = 32
    frames: int = 8  # the clips it was trained on (it reads clips of any length: the pool is global)
    num_classes: int = 8
    widths: tuple[int, ...] = (16, 32, 64)  # one block per width: a 3x3x3 convolution that halves H and W
    time_strides: tuple[int, ...] = (1, 1, 2)  # and divides T by this, per block
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)  # per-channel statistics of the training clips
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_range("in_channels", self.in_channels, 1, MAX_WIDTH)
        check_range("image_size", self.image_size, 1, MAX_SIDE)
        check_range("frames", self.frames, 1, MAX_FRAMES)
        check_range("num_classes", self.num_classes, 1, MAX_CLASSES)
        check_range("the number of `widths`", len(self.widths), 1, MAX_DEPTH)
        for w in self.widths:
            check_range("every `widths` entry", w, 1, MAX_WIDTH)
        if len(self.time_strides) != len(self.widths) or not all(s in (1, 2) for s in self.time_strides):
            raise GenlabError(f"`time_strides` needs a 1 or 2 per block of `widths` ({len(self.widths)})")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise GenlabError(f"mean and std need one value per input channel ({self.in_channels})")
        if not all(s > 0 for s in self.std):
            raise GenlabError(f"std must be positive (got {self.std})")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise GenlabError(
                f"class_names names {len(self.class_names)} classes, the classifier has {self.num_classes}"
            )


def conv3d_block(c_in: int, c_out: int, time_stride: int) -> nn.Sequential:
    """A 3x3x3 convolution with stride (time_stride, 2, 2), BatchNorm and ReLU: strided rather than pooled,
    so that every block is one cheap convolution on a laptop CPU."""
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, 3, stride=(time_stride, 2, 2), padding=1, bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(inplace=True),
    )


class VideoClassifier(PretrainedMixin, nn.Module):
    """Conv3d blocks, a global average pool over time and space, a linear head."""

    kind = "video-classifier"
    config_class = VideoClassifierConfig

    def __init__(self, config: VideoClassifierConfig):
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.tensor(config.mean, dtype=torch.float32).view(1, -1, 1, 1, 1))
        self.register_buffer("std", torch.tensor(config.std, dtype=torch.float32).view(1, -1, 1, 1, 1))
        blocks, c = [], config.in_channels
        for w, s in zip(config.widths, config.time_strides, strict=True):
            blocks.append(conv3d_block(c, w, s))
            c = w
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(c, config.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, widths[-1]) pooled features of clips ``x`` (N, T, C, H, W) in [0, 1]."""
        if x.ndim != 5 or x.shape[2] != self.config.in_channels:
            raise GenlabError(
                f"the video classifier takes clips (N, T, {self.config.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        h = (x.transpose(1, 2) - self.mean) / self.std  # Conv3d reads (N, C, T, H, W)
        return self.body(h).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
