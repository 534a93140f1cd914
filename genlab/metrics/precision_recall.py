"""Improved precision and recall of generative models (Kynkaanniemi et al. 2019)."""

from __future__ import annotations

import torch

from genlab.errors import GenlabError


def _as_features(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise GenlabError(
            f"{name} must be a matrix of at least 2 feature vectors, got shape {tuple(x.shape)}"
        )
    return x


def knn_radii(features: torch.Tensor, k: int = 3, chunk: int = 1024) -> torch.Tensor:
    """Distance from each vector to its k-th nearest neighbour among the others (itself excluded)."""
    if not 1 <= k < features.shape[0]:
        raise GenlabError(f"k must be between 1 and {features.shape[0] - 1} for {features.shape[0]} vectors")
    radii = [torch.cdist(block, features).kthvalue(k + 1, dim=1).values for block in features.split(chunk)]
    return torch.cat(radii)  # k + 1: the smallest distance is the vector's own 0


def _inside_manifold(
    points: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, chunk: int
) -> torch.Tensor:
    """For each point, whether it lies within radius_j of some support vector j."""
    inside = [(torch.cdist(block, support) <= radii[None, :]).any(dim=1) for block in points.split(chunk)]
    return torch.cat(inside)


def precision_recall(
    real: torch.Tensor, fake: torch.Tensor, k: int = 3, chunk: int = 1024
) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019, eq. 1-3), k = 3 as in the paper.

    Each set's manifold is the union of balls around its vectors with radius the distance to the k-th
    nearest neighbour in the same set. Precision is the share of fake vectors inside the real manifold
    (are samples realistic?); recall the share of real vectors inside the fake manifold (is the data's
    variety covered?).
    """
    real, fake = _as_features(real, "real features"), _as_features(fake, "fake features")
    if real.shape[1] != fake.shape[1]:
        raise GenlabError(f"feature sizes differ ({real.shape[1]} and {fake.shape[1]}); use one extractor")
    precision = _inside_manifold(fake, real, knn_radii(real, k, chunk), chunk).double().mean()
    recall = _inside_manifold(real, fake, knn_radii(fake, k, chunk), chunk).double().mean()
    return {"precision": float(precision), "recall": float(recall), "k": k}
