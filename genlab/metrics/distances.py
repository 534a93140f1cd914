"""Distances between two sets of image features: Frechet distance (FID) and kernel inception distance (KID).

Both take feature matrices (N, D) from the same extractor; which extractor it was is the caller's to
record. Computed in float64 with numpy.
"""

from __future__ import annotations

import numpy as np
import torch

from genlab.errors import GenlabError


def _as_array(features: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    x = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    if x.ndim != 2 or x.shape[0] < 2:
        raise GenlabError(f"{name} must be a matrix of at least 2 feature vectors, got shape {x.shape}")
    return x.astype(np.float64)


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of feature vectors (N, D)."""
    x = _as_array(features, "features")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((matrix + matrix.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between N(mu1, S1) and N(mu2, S2).

    The Frechet (Wasserstein-2) distance of Dowson & Landau (1982), used as FID by Heusel et al. (2017,
    eq. 6). Tr((S1 S2)^(1/2)) is computed as the sum of the square roots of the eigenvalues of the
    symmetric PSD matrix S1^(1/2) S2 S1^(1/2), which has the same eigenvalues as S1 S2; unlike
    scipy.linalg.sqrtm on S1 S2 this stays real and stable when the covariances are near singular.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise GenlabError(
            f"statistics do not match: means {mu1.shape} and {mu2.shape}, covariances {sigma1.shape} "
            f"and {sigma2.shape}; compute both with the same feature extractor"
        )
    root1 = _sqrt_psd(sigma1)
    eig = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    trace_sqrt = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt, 0.0))


def fid_from_features(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor) -> float:
    """The Frechet distance between Gaussians fitted to two feature sets."""
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


def kernel_inception_distance(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    subset_size: int = 1000,
    num_subsets: int = 100,
    seed: int = 0,
) -> tuple[float, float]:
    """KID of Binkowski et al. (2018): the unbiased estimate of the squared MMD with the polynomial kernel
    k(x, y) = (x.y / D + 1)^3, averaged over random subsets; returns (mean, standard deviation).

    Unbiased: for two samples of one distribution its expectation is 0 (it can be negative).
    """
    x, y = _as_array(real, "real features"), _as_array(fake, "fake features")
    if x.shape[1] != y.shape[1]:
        raise GenlabError(f"feature sizes differ ({x.shape[1]} and {y.shape[1]}); use one feature extractor")
    m = min(subset_size, x.shape[0], y.shape[0])
    d = x.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_subsets):
        a = x[rng.choice(x.shape[0], m, replace=False)]
        b = y[rng.choice(y.shape[0], m, replace=False)]
        kxx, kyy, kxy = (a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3
        # Off-diagonal means of k(x, x') and k(y, y') (Binkowski et al. eq. 4), mean of k(x, y).
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(within - 2.0 * kxy.mean())
    values_arr = np.array(values)
    return float(values_arr.mean()), float(values_arr.std())
