"""Does a class-conditional generator draw the class it is asked for? A trained classifier judges."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from genlab.classification.evaluate import predict
from genlab.errors import GenlabError


def check_judge(pipe: Any, classifier: nn.Module) -> None:
    """A one-line error unless ``classifier`` takes the generator's images and knows its classes."""
    ccfg = classifier.config
    if pipe.num_classes and ccfg.num_classes != pipe.num_classes:
        raise GenlabError(
            f"the classifier knows {ccfg.num_classes} classes, the generator {pipe.num_classes}"
        )
    channels, size = pipe.image_shape
    if (ccfg.in_channels, ccfg.image_size) != (channels, size):
        raise GenlabError(
            f"the classifier takes {ccfg.in_channels}x{ccfg.image_size}x{ccfg.image_size} images, "
            f"the generator makes {channels}x{size}x{size}"
        )


@torch.no_grad()
def generate_samples(
    pipe: Any,
    n: int,
    steps: int = 20,
    sampler: str = "dpmpp-2m",
    guidance_scale: float = 3.0,
    seed: int = 0,
    batch_size: int = 100,
    num_classes: int | None = None,
    **pipe_kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` images from ``pipe`` and their labels: for a class model ``n // K`` of every class (at least
    one), class by class; for an unconditional one ``n`` images and no labels. Deterministic in ``seed``.
    ``num_classes`` overrides the pipeline's (the classes of a guide classifier on an unconditional model);
    ``pipe_kwargs`` go to every call of the pipeline (e.g. the guide)."""
    if n < 1:
        raise GenlabError(f"`n` must be at least 1 (got {n})")
    k = pipe.num_classes if num_classes is None else num_classes
    labels = torch.arange(k).repeat_interleave(max(1, n // k)) if k else None
    total = len(labels) if labels is not None else n
    generator = torch.Generator().manual_seed(seed)
    chunks = labels.split(batch_size) if labels is not None else [None] * -(-total // batch_size)
    images = []
    for i, chunk in enumerate(chunks):
        count = len(chunk) if chunk is not None else min(batch_size, total - i * batch_size)
        images.append(
            pipe(count, chunk, steps, guidance_scale, sampler, generator=generator, **pipe_kwargs).tensors
        )
    return torch.cat(images), labels


def class_accuracy(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Share of ``predicted`` equal to ``labels``, overall and per asked class (NaN for absent classes)."""
    correct = (predicted == labels).double()
    counts = torch.bincount(labels, minlength=num_classes).double()
    per = torch.bincount(labels, weights=correct, minlength=num_classes) / counts
    return {"accuracy": float(correct.mean()), "per_class_accuracy": per.tolist()}


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
        raise GenlabError("accuracy needs a class-conditional model (trained with `cond` class)")
    check_judge(pipe, classifier)
    if per_class < 1:
        raise GenlabError(f"`per_class` must be at least 1 (got {per_class})")
    images, labels = generate_samples(
        pipe, per_class * num_classes, steps, sampler, guidance_scale, seed, batch_size
    )
    predicted = predict(classifier, images).argmax(1)
    return {
        **class_accuracy(predicted, labels, num_classes),
        "predicted_histogram": torch.bincount(predicted, minlength=num_classes).tolist(),
        "n": int(labels.numel()),
        "settings": {"sampler": sampler, "steps": steps, "guidance_scale": guidance_scale, "seed": seed},
        "images": images,
        "labels": labels,
        "predicted": predicted,
    }
