"""Differentiable augmentation for data-efficient GAN training (Zhao et al. 2020, "Differentiable
Augmentation for Data-Efficient GAN Training", section 3 and their DiffAugment code).

With a few thousand images, D memorises the training set and its feedback to G turns into noise. Applying
the *same* random augmentations to real and generated images before every D call (in D's and in G's step)
keeps D from memorising while G is still pushed toward the un-augmented data: the augmentations are
differentiable, so G's gradient flows through them. Functions take images in the model space [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genlab.errors import GenlabError


def translation(
    x: torch.Tensor, generator: torch.Generator | None = None, ratio: float = 0.125
) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its side in x and y, filling with zeros."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), generator=generator).to(x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), generator=generator).to(x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = (gy[None] + dy + 1).clamp(0, h + 1)
    gx = (gx[None] + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)  # a zero border that out-of-range indices land on
    return padded[torch.arange(n, device=x.device)[:, None, None], gy, gx].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, generator: torch.Generator | None = None, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ``ratio`` of the side at a random place in each image (DeVries & Taylor 2017)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=generator).to(x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=generator).to(x.device)
    gy = torch.arange(h, device=x.device)[None, :, None]
    gx = torch.arange(w, device=x.device)[None, None, :]
    y0, x0 = oy - ch // 2, ox - cw // 2  # the square's corner; it may hang over the border
    inside = (gy >= y0) & (gy < y0 + ch) & (gx >= x0) & (gx < x0 + cw)
    return x * (~inside)[:, None].to(x)


def brightness(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add one uniform offset in [-0.5, 0.5) per image (DiffAugment's colour, on any channel count)."""
    return x + (torch.rand(x.shape[0], 1, 1, 1, generator=generator).to(x) - 0.5)


def contrast(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each image's deviation from its mean by a factor in [0.5, 1.5)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(x.shape[0], 1, 1, 1, generator=generator).to(x) + 0.5) + mean


POLICIES = {"translation": (translation,), "cutout": (cutout,), "color": (brightness, contrast)}


def parse_policy(text: str) -> tuple[str, ...]:
    """``"translation,cutout"`` -> its names, checked; ``""`` or ``"none"``: no augmentation."""
    names = tuple(t.strip() for t in text.split(",") if t.strip() and t.strip() != "none")
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise GenlabError(
            f"unknown `augment` {', '.join(unknown)}; choose from {', '.join(POLICIES)} or none"
        )
    return names


def diff_augment(
    x: torch.Tensor, policy: tuple[str, ...], generator: torch.Generator | None = None
) -> torch.Tensor:
    """Apply every augmentation of ``policy`` (in DiffAugment's order: colour, translation, cutout)."""
    for name in ("color", "translation", "cutout"):
        if name in policy:
            for f in POLICIES[name]:
                x = f(x, generator)
    return x
