"""Adversarial patches (Brown et al. 2017, "Adversarial Patch"): one small image, pasted anywhere on any
input, that makes the classifier see the target class. Its pixels are optimised over random placements
(Expectation over Transformation, Athalye et al. 2018) with a total-variation term for smoothness and a
printability term pulling each pixel toward a printable colour (Sharif et al. 2016, eq. 4's NPS)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genlab.adversarial.attacks import check_inputs, eval_mode
from genlab.data import ImageDataset
from genlab.errors import GenlabError

# A small printable palette: black, white, the primaries and secondaries, mid-gray.
PRINTABLE = torch.tensor(
    [[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1], [0.5, 0.5, 0.5]]
)


def total_variation(patch: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels (C, H, W): small for smooth, printable patches."""
    return (patch[:, 1:] - patch[:, :-1]).abs().mean() + (patch[:, :, 1:] - patch[:, :, :-1]).abs().mean()


def printability(patch: torch.Tensor, palette: torch.Tensor = PRINTABLE) -> torch.Tensor:
    """Mean over pixels of the distance to the nearest printable colour (gray patches: gray levels)."""
    colours = palette if patch.shape[0] == 3 else palette.mean(1, keepdim=True).unique(dim=0)
    pixels = patch.flatten(1).T  # (H*W, C)
    return torch.cdist(pixels, colours.to(patch)).amin(1).mean()


def apply_patch(
    images: torch.Tensor, patch: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    """Paste ``patch`` (C, h, w) onto each image at its (row, col) top-left corner."""
    _, _, h, w = images.shape
    ph, pw = patch.shape[1:]
    yy = torch.arange(h, device=images.device)[None, :, None] - rows.view(-1, 1, 1)
    xx = torch.arange(w, device=images.device)[None, None, :] - cols.view(-1, 1, 1)
    inside = (yy >= 0) & (yy < ph) & (xx >= 0) & (xx < pw)
    canvas = patch[:, yy.clamp(0, ph - 1), xx.clamp(0, pw - 1)].permute(1, 0, 2, 3)  # (N, C, H, W)
    return torch.where(inside[:, None], canvas, images)


def random_places(n: int, image_size: int, patch_size: int, generator: torch.Generator | None = None):
    rows = torch.randint(0, image_size - patch_size + 1, (n,), generator=generator)
    cols = torch.randint(0, image_size - patch_size + 1, (n,), generator=generator)
    return rows, cols


@dataclass
class PatchResult:
    patch: torch.Tensor  # (C, h, w) in [0, 1]
    success_rate: float  # share of held-out images (not of the target class) classified as the target
    clean_target_rate: float  # the same share without the patch (the baseline)


def train_patch(
    model: nn.Module,
    images: torch.Tensor,
    target: int,
    size: int = 8,
    steps: int = 300,
    lr: float = 0.3,
    tv_weight: float = 0.01,
    print_weight: float = 0.01,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Optimise a ``size`` x ``size`` patch that turns images into class ``target`` wherever it lands."""
    check_inputs(images)
    n, c, h, w = images.shape
    if not 0 < size <= min(h, w):
        raise GenlabError(f"the patch size must lie in 1..{min(h, w)} (got {size})")
    logit = torch.zeros(c, size, size).requires_grad_(True)
    opt = torch.optim.Adam([logit], lr=lr)
    labels = torch.full((batch_size,), target, dtype=torch.long)
    with eval_mode(model):
        for _ in range(steps):
            idx = torch.randint(0, n, (batch_size,), generator=generator)
            rows, cols = random_places(batch_size, h, size, generator)
            patch = torch.sigmoid(logit)
            loss = F.cross_entropy(model(apply_patch(images[idx], patch, rows, cols)), labels)
            loss = loss + tv_weight * total_variation(patch) + print_weight * printability(patch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return torch.sigmoid(logit).detach()


@torch.no_grad()
def evaluate_patch(
    model: nn.Module,
    patch: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    target: int,
    generator: torch.Generator | None = None,
) -> PatchResult:
    """Success on held-out images whose true class is not the target, at random places."""
    keep = labels != target
    x = images[keep]
    rows, cols = random_places(len(x), x.shape[2], patch.shape[1], generator)
    with eval_mode(model):
        hit = model(apply_patch(x, patch, rows, cols)).argmax(1) == target
        base = model(x).argmax(1) == target
    return PatchResult(patch, float(hit.float().mean()), float(base.float().mean()))


def patch_demo(
    model: nn.Module,
    val: ImageDataset,
    names: list[str],
    target: str,
    size: int = 12,
    steps: int = 300,
    tv_weight: float = 0.01,
    print_weight: float = 0.01,
    seed: int = 0,
    out: str | Path = "patch.png",
) -> tuple[PatchResult, int]:
    """`genlab attack patch`: a patch toward the class called ``target``, trained on the first half of the
    held-out ``val`` images and measured on the other half at random places (Brown et al. 2017); a picture
    of the patch and of 16 patched images with ``model``'s answers goes to ``out``. Returns the result and
    how many held-out images of other classes it was measured on."""
    from genlab.adversarial.evaluation import class_index
    from genlab.classification.evaluate import predict
    from genlab.data import save_grid

    k = class_index(names, target)
    half = len(val) // 2
    g = torch.Generator().manual_seed(seed)
    patch = train_patch(
        model, val.images[:half], k, size, steps, tv_weight=tv_weight, print_weight=print_weight, generator=g
    )
    result = evaluate_patch(model, patch, val.images[half:], val.labels[half:], k, generator=g)
    others = val.images[half:][val.labels[half:] != k]
    x = others[:16]
    rows, cols = random_places(len(x), x.shape[2], size, g)
    patched = apply_patch(x, patch, rows, cols)
    pred = predict(model, patched).argmax(1).tolist()
    side = x.shape[2]
    big = F.pad(patch, [0, side - size, 0, side - size], value=0.5)[None]
    save_grid(out, torch.cat([big, patched]), ["the patch"] + [names[p] for p in pred], nrow=9)
    return result, len(others)
