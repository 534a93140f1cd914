"""Accuracy and predictions of a classifier on images in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data import ImageDataset


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Class probabilities (N, K) for images (N, C, H, W) in [0, 1], in eval mode, mode restored after."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        probs = [
            F.softmax(model(images[i : i + batch_size].to(device)), dim=1).cpu()
            for i in range(0, images.shape[0], batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(probs)


@torch.no_grad()
def evaluate_classifier(model: nn.Module, data: ImageDataset, batch_size: int = 500) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy over ``data`` (which must have labels)."""
    if data.labels is None:
        raise ValueError(f"data set {data.name} has no labels to score a classifier against")
    probs = predict(model, data.images, batch_size)
    labels = data.labels.cpu()
    nll = -torch.log(probs.gather(1, labels[:, None]).clamp_min(1e-12)).mean()
    acc = (probs.argmax(1) == labels).float().mean()
    return {"accuracy": float(acc), "loss": float(nll), "n": float(len(labels))}
