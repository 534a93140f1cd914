"""The U-Net paper's loss weights (Ronneberger et al. 2015, eq. 2):
w(x) = w_c(x) + w0 exp(-(d1(x) + d2(x))^2 / (2 sigma^2)), where w_c balances the class frequencies and
d1, d2 are the distances to the nearest and the second nearest cell: the narrow background gaps between
touching cells get large weights, so the network learns to keep them open."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def class_balance(target: np.ndarray, num_classes: int = 2) -> np.ndarray:
    """w_c: each pixel weighted by (pixels / (classes x pixels of its class)), 1 for a balanced image."""
    counts = np.bincount(target.ravel(), minlength=num_classes).astype(np.float64)
    per_class = np.where(counts > 0, target.size / (num_classes * np.maximum(counts, 1)), 0.0)
    return per_class[target]


def unet_weight_map(
    instances: np.ndarray, target: np.ndarray, w0: float = 10.0, sigma: float = 5.0
) -> np.ndarray:
    """Eq. 2 for one image: ``instances`` (H, W) with 0 for background and 1..K for cells, ``target`` the
    0/1 class map. The border term applies on background pixels (the seams between cells included), where
    separating cells is decided; with fewer than two cells there is no second distance and no term."""
    weights = class_balance(target)
    ids = [k for k in np.unique(instances) if k > 0]
    if len(ids) < 2:
        return weights.astype(np.float32)
    distances = np.stack([ndimage.distance_transform_edt(instances != k) for k in ids])
    distances.sort(axis=0)
    border = w0 * np.exp(-((distances[0] + distances[1]) ** 2) / (2 * sigma**2))
    return (weights + np.where(target == 0, border, 0.0)).astype(np.float32)
