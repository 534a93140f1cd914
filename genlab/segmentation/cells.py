"""`cells`: a procedural stand-in for the microscopy images of the U-Net paper (Ronneberger et al. 2015):
irregular blobs ("cells"), many of them touching, on a textured background, each with its instance mask.
Deterministic from a seed.

The segmentation target is the paper's: cell against background, where the one-pixel seam between two
touching cells counts as background, so that separating touching cells is part of the task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from genlab.errors import GenlabError


@dataclass
class CellsConfig:
    size: int = 96  # side of each image
    cells: tuple[int, int] = (6, 12)  # how many per image, inclusive range
    radius: tuple[float, float] = (6.0, 11.0)  # mean radius of a cell in pixels
    touching: float = 0.6  # share of cells placed against an earlier one

    def __post_init__(self) -> None:
        if self.size < 16 or self.cells[0] < 1 or self.cells[1] < self.cells[0]:
            raise GenlabError("cells: size >= 16 and a cell range like (6, 12)")


def _blob(rng: np.random.Generator, size: int, cy: float, cx: float, r: float) -> np.ndarray:
    """A star-shaped blob: the radius r(theta) = r (1 + sum_k a_k cos(k theta + phi_k)) for k = 2..4."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    theta = np.arctan2(yy - cy, xx - cx)
    wobble = sum(rng.uniform(0.0, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * math.pi)) for k in (2, 3, 4))
    return np.hypot(yy - cy, xx - cx) <= r * (1.0 + wobble)


def make_cell_image(cfg: CellsConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One image (size, size) in [0, 1] and its instance map (0 background, 1..K cells)."""
    size = cfg.size
    instances = np.zeros((size, size), dtype=np.int32)
    centers: list[tuple[float, float, float]] = []
    for k in range(1, int(rng.integers(cfg.cells[0], cfg.cells[1] + 1)) + 1):
        r = min(rng.uniform(*cfg.radius), size / 4)  # on a small image a cell must still fit inside
        if centers and rng.random() < cfg.touching:  # against an earlier cell, its edge on ours
            py, px, pr = centers[int(rng.integers(len(centers)))]
            angle = rng.uniform(0, 2 * math.pi)
            cy, cx = py + (pr + r) * 0.9 * math.sin(angle), px + (pr + r) * 0.9 * math.cos(angle)
        else:
            cy, cx = rng.uniform(r, size - r), rng.uniform(r, size - r)
        blob = _blob(rng, size, cy, cx, r) & (instances == 0)  # earlier cells stay whole
        if blob.sum() < 0.3 * math.pi * r * r:  # mostly hidden or outside: skip it
            continue
        instances[blob] = k
        centers.append((cy, cx, r))
    instances = _relabel(instances)
    # Background: smooth texture; cells: their own brightness and grain, a darker rim on every edge
    texture = ndimage.gaussian_filter(rng.standard_normal((size, size)), 2.0)
    image = 0.3 + 0.08 * texture / (texture.std() + 1e-8)
    grain = ndimage.gaussian_filter(rng.standard_normal((size, size)), 1.0)
    for k in range(1, instances.max() + 1):
        cell = instances == k
        image[cell] = rng.uniform(0.6, 0.85) + 0.05 * grain[cell] / (grain.std() + 1e-8)
    image[boundaries(instances) & (instances > 0)] -= 0.25
    image += 0.03 * rng.standard_normal((size, size))
    return np.clip(image, 0.0, 1.0).astype(np.float32), instances


def _relabel(instances: np.ndarray) -> np.ndarray:
    out = np.zeros_like(instances)
    for new, old in enumerate(k for k in np.unique(instances) if k > 0):
        out[instances == old] = new + 1
    return out


def boundaries(instances: np.ndarray) -> np.ndarray:
    """Pixels of a cell with a 4-neighbour in another cell or the background."""
    padded = np.pad(instances, 1, mode="edge")
    center = padded[1:-1, 1:-1]
    edge = np.zeros(instances.shape, dtype=bool)
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        edge |= padded[1 + dy : 1 + dy + instances.shape[0], 1 + dx : 1 + dx + instances.shape[1]] != center
    return edge


def seams(instances: np.ndarray) -> np.ndarray:
    """Cell pixels with a 4-neighbour in a *different* cell: the borders between touching cells."""
    padded = np.pad(instances, 1, mode="constant")
    h, w = instances.shape
    seam = np.zeros((h, w), dtype=bool)
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        other = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        seam |= (other > 0) & (instances > 0) & (other != instances)
    return seam


def semantic_target(instances: np.ndarray) -> np.ndarray:
    """1 on cells, 0 on background and on the seams between touching cells (the paper's target)."""
    return ((instances > 0) & ~seams(instances)).astype(np.int64)


def touching_pairs(instances: np.ndarray) -> set[tuple[int, int]]:
    """Pairs (a, b), a < b, of cells that share an edge."""
    pairs: set[tuple[int, int]] = set()
    for a, b in ((instances[:, :-1], instances[:, 1:]), (instances[:-1, :], instances[1:, :])):
        touch = (a > 0) & (b > 0) & (a != b)
        for x, y in zip(a[touch].tolist(), b[touch].tolist(), strict=True):
            pairs.add((min(x, y), max(x, y)))
    return pairs


def separated_pairs(instances: np.ndarray, prediction: np.ndarray) -> tuple[int, int]:
    """(touching pairs the binary ``prediction`` separates, touching pairs): a pair is separated when the
    connected components of the prediction that cover most of each cell differ."""
    components, _ = ndimage.label(prediction > 0)
    owner = {}
    for k in range(1, instances.max() + 1):
        labels = components[instances == k]
        labels = labels[labels > 0]
        owner[k] = int(np.bincount(labels).argmax()) if labels.size else 0
    pairs = touching_pairs(instances)
    good = sum(1 for a, b in pairs if owner[a] and owner[b] and owner[a] != owner[b])
    return good, len(pairs)


def make_cells(n: int, seed: int = 0, cfg: CellsConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (n, 1, size, size) in [0, 1] and instance maps (n, size, size), the same for a seed."""
    cfg = cfg or CellsConfig()
    rng = np.random.default_rng(seed)
    pairs = [make_cell_image(cfg, rng) for _ in range(n)]
    images = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None]
    return images, torch.from_numpy(np.stack([p[1] for p in pairs]))
