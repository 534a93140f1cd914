"""Does a class-conditional generator draw the class it is asked for? A trained classifier judges."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from genlab.classification.evaluate import predict
from genlab.errors import GenlabError


@torch.no_grad()
def conditional_accuracy(
    pipe: Any,
    classifier: nn.Module,
    per_class: int = 50,
    steps: int = 20,
    sampler: str = "dpmpp-2m",
    guidance_scale: float = 3.0,
    seed: int = 0,
    batch_size: int = 100,
) -> dict[str, Any]:
    """Generate ``per_class`` images of every class and report how often ``classifier`` agrees.

    Returns the overall accuracy, the accuracy per asked class, the histogram of predicted classes (mode
    coverage), the images and labels; the settings are recorded beside the numbers.
    """
    num_classes = pipe.num_classes
    if num_classes == 0:
        raise GenlabError("accuracy needs a class-conditional model (trained with --cond class)")
    ccfg, ucfg = classifier.config, pipe.unet.config
    if ccfg.num_classes != num_classes:
        raise GenlabError(f"the classifier knows {ccfg.num_classes} classes, the generator {num_classes}")
    if (ccfg.in_channels, ccfg.image_size) != (ucfg.in_channels, ucfg.image_size):
        raise GenlabError(
            f"the classifier takes {ccfg.in_channels}x{ccfg.image_size}x{ccfg.image_size} images, "
            f"the generator makes {ucfg.in_channels}x{ucfg.image_size}x{ucfg.image_size}"
        )
    if per_class < 1:
        raise GenlabError(f"--n must give at least one image per class (got {per_class} per class)")
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    generator = torch.Generator().manual_seed(seed)
    images = torch.cat(
        [
            pipe(len(chunk), chunk, steps, guidance_scale, sampler, generator=generator).tensors
            for chunk in labels.split(batch_size)
        ]
    )
    predicted = predict(classifier, images).argmax(1)
    correct = predicted == labels
    per = correct.float().view(num_classes, per_class).mean(1)
    return {
        "accuracy": float(correct.float().mean()),
        "per_class_accuracy": per.tolist(),
        "predicted_histogram": torch.bincount(predicted, minlength=num_classes).tolist(),
        "n": int(labels.numel()),
        "settings": {"sampler": sampler, "steps": steps, "guidance_scale": guidance_scale, "seed": seed},
        "images": images,
        "labels": labels,
        "predicted": predicted,
    }
