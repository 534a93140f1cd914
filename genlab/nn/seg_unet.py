"""The U-Net of the segmentation paper (Ronneberger et al. 2015, figure 1): a contracting path of two
unpadded ("valid") 3x3 convolutions and a 2x2 max-pooling per level, an expansive path of a 2x2
up-convolution that halves the channels, the contracting path's map cropped to size and concatenated,
and two valid 3x3 convolutions, then a 1x1 convolution to the classes. Valid convolutions make the output
smaller than the input (572 -> 388 for the paper's four poolings): the missing context at the border is
supplied by mirroring, tile by tile (genlab.segmentation.tiling)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genlab.checks import MAX_CLASSES, MAX_WIDTH, check_range
from genlab.errors import GenlabError
from genlab.nn.pretrained import PretrainedMixin

MAX_POOLINGS = 12  # deeper, the smallest input that fits is larger than any image genlab takes


@dataclass
class SegUNetConfig:
    in_channels: int = 1
    num_classes: int = 2
    base_channels: int = 16  # channels of the first level, doubled per level (the paper: 64 .. 1024)
    depth: int = 4  # poolings (the paper: 4)
    batch_norm: bool = True  # after every convolution (not in the paper; steadies small-batch CPU training)
    out_channels: int = 0  # > 0: an image-to-image model with this many output channels (no classes)

    def __post_init__(self) -> None:
        if self.depth < 1 or self.base_channels < 1 or self.num_classes < 2:
            raise GenlabError("the U-Net needs depth >= 1, base channels >= 1 and at least 2 classes")
        check_range("in_channels", self.in_channels, 1, MAX_WIDTH)
        check_range("num_classes", self.num_classes, 2, MAX_CLASSES)
        check_range("depth", self.depth, 1, MAX_POOLINGS)  # the width doubles at every level
        check_range("base_channels", self.base_channels, 1, MAX_WIDTH)
        check_range("out_channels", self.out_channels, 0, MAX_WIDTH)


def output_size(input_size: int, depth: int) -> int:
    """The side of the output for an input of ``input_size`` (valid convolutions lose 4 pixels per level
    and direction change); raises if a pooling would meet an odd side."""
    side = input_size
    for _ in range(depth):
        side -= 4
        if side <= 0 or side % 2:
            raise GenlabError(
                f"input side {input_size} does not fit a U-Net of depth {depth}; "
                f"try {fit_input(1, depth)} + a multiple of {2**depth}"
            )
        side //= 2
    side -= 4
    for _ in range(depth):
        side = 2 * side - 4
    if side <= 0:
        raise GenlabError(f"input side {input_size} is too small for a U-Net of depth {depth}")
    return side


def fit_input(at_least: int, depth: int) -> int:
    """The smallest valid input side whose output is at least ``at_least`` pixels."""
    bottom = 1
    while True:
        side = bottom + 4
        for _ in range(depth):
            side = 2 * side + 4
        out = bottom
        for _ in range(depth):
            out = 2 * out - 4
        if out >= at_least and out > 0:
            return side
        bottom += 1


def _double_conv(c_in: int, c_out: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a in (c_in, c_out):
        layers.append(nn.Conv2d(a, c_out, 3))
        if batch_norm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def center_crop(x: torch.Tensor, side: int) -> torch.Tensor:
    """The central side x side window of x (N, C, H, W): the paper's crop of the skip connection."""
    top, left = (x.shape[-2] - side) // 2, (x.shape[-1] - side) // 2
    return x[..., top : top + side, left : left + side]


class SegUNet(PretrainedMixin, nn.Module):
    """``forward(x)``: (N, C, S, S) -> class logits (N, K, output_size(S), output_size(S))."""

    kind = "segmenter"
    config_class = SegUNetConfig

    def __init__(self, config: SegUNetConfig):
        super().__init__()
        self.config = cfg = config
        widths = [cfg.base_channels * 2**i for i in range(cfg.depth + 1)]
        self.down = nn.ModuleList()
        c = cfg.in_channels
        for w in widths[:-1]:
            self.down.append(_double_conv(c, w, cfg.batch_norm))
            c = w
        self.pool = nn.MaxPool2d(2)
        self.bottom = _double_conv(c, widths[-1], cfg.batch_norm)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(2 * w, w, 2, stride=2))
            self.merge.append(_double_conv(2 * w, w, cfg.batch_norm))
        self.head = nn.Conv2d(widths[0], cfg.out_channels or cfg.num_classes, 1)
        for m in self.modules():  # He et al. (2015) initialisation, as the paper draws its weights
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output_size(x.shape[-1], self.config.depth)  # a clear error for a side that does not fit
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips), strict=True):
            x = up(x)
            x = merge(torch.cat([center_crop(skip, x.shape[-1]), x], dim=1))
        return self.head(x)
