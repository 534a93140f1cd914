"""Which classes a generator draws, and does it copy its training data?"""

from __future__ import annotations

import math

import torch


def mode_coverage(predicted: torch.Tensor, num_classes: int, min_share: float = 0.1) -> dict:
    """Histogram of predicted classes, the number of modes covered and the entropy of the histogram.

    A class counts as covered when it receives at least ``min_share`` of the samples a uniform generator
    would give it (with 0.1 and 10 classes: 1% of all samples), so one stray sample does not hide a
    collapse. The entropy is in nats; divided by log K it is 1 for a uniform histogram and 0 for a
    single mode.
    """
    counts = torch.bincount(predicted.reshape(-1).long().cpu(), minlength=num_classes).double()
    n = counts.sum()
    p = counts / n
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    covered = int((counts >= min_share * n / num_classes).sum())
    return {
        "histogram": counts.long().tolist(),
        "modes_covered": covered,
        "num_classes": num_classes,
        "entropy": entropy,
        "normalized_entropy": entropy / math.log(num_classes) if num_classes > 1 else 0.0,
    }


def nearest_neighbours(samples: torch.Tensor, training: torch.Tensor, chunk: int = 256) -> dict:
    """For each sample, the L2 pixel distance to its nearest training image and that image's index.

    Memorization shows as distances far below those between distinct training images; the caller puts
    sample / neighbour pairs side by side so a person can look.
    """
    flat_train = training.reshape(training.shape[0], -1).double()
    distances, indices = [], []
    for block in samples.reshape(samples.shape[0], -1).double().split(chunk):
        d, i = torch.cdist(block, flat_train).min(dim=1)
        distances.append(d)
        indices.append(i)
    return {"distances": torch.cat(distances), "indices": torch.cat(indices)}
