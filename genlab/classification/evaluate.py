"""Accuracy and predictions of a classifier on images in [0, 1]."""

from __future__ import annotations

import dataclasses
from pathlib import Path

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


def load_classifier_run(run: str | Path, device: str | torch.device = "cpu"):
    """(classifier, its validation split, class names) of a classifier run: the images it never trained on."""
    from genlab import rundir
    from genlab.data import DataConfig, load_splits
    from genlab.nn import Classifier
    from genlab.nn.pretrained import config_from_dict

    model = Classifier.from_pretrained(run, device=device)
    config = rundir.read_config(run, kind="classifier")
    data = config.get("data", {})
    split_fields = {f.name for f in dataclasses.fields(DataConfig)}  # not how the training batches varied
    data_cfg = config_from_dict(
        DataConfig, {k: v for k, v in data.items() if k in split_fields}, f"{run}/config.json"
    )
    _, val = load_splits(data_cfg.name, data_cfg.split_seed, data_cfg.val_fraction, data_cfg.image_size)
    names = list(model.config.class_names) or [str(i) for i in range(model.config.num_classes)]
    return model, val, names
