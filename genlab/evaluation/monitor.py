"""Sample quality during training: what every evaluation of a generator's run measures on its samples.

A generator is judged by its samples, not its loss: the loss of a diffusion model keeps falling while its
samples stay blobs, and a GAN's losses say little at all. Every evaluation therefore draws the same
fixed-seed samples and scores them: FID and precision/recall against the validation split, on the
features of the data's classifier, and that classifier's verdict, the histogram of the classes it sees
(mode coverage) and, for a class-conditional model, the share of samples recognised as the class asked
for. Shared by the GAN and diffusion tasks, whose runs draw the numbers in ``RUN/diagnostics.png``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from genlab.checks import MAX_BATCH, check_range
from genlab.data import DataConfig, ImageDataset
from genlab.errors import GenlabError


@dataclass
class MonitorConfig:
    """What each evaluation measures; stored as config.json's ``monitor``."""

    samples: int = 500  # generated images scored (fixed seeds, so evaluations compare); 0: none
    features: str = (
        "auto"  # FID features: auto (the data's own classifier), inception, a classifier run, none
    )
    paraphrases: bool = False  # text on shapes: also the prompts' scenes in held-out phrasings

    def __post_init__(self) -> None:
        if self.samples < 0:
            raise GenlabError(f"`samples` must be 0 (off) or positive (got {self.samples})")
        check_range("samples", self.samples, 0, MAX_BATCH)


def monitor_extractor(monitor: MonitorConfig, data: DataConfig, log: Callable[[str], None] = print):
    """The feature extractor of ``monitor`` for ``data``, or None (``features`` "none", or "auto" on data
    without labels to train one on, which is said in one line)."""
    if monitor.features == "none" or monitor.samples == 0:
        return None
    from genlab.evaluation.features import resolve_extractor

    try:
        with torch.enable_grad():  # "auto" may train a classifier, also when called from an evaluation
            return resolve_extractor(monitor.features, data, log=log)
    except GenlabError as e:
        if monitor.features != "auto":
            raise
        log(f"no FID during training: {e}")
        return None


def sample_quality(
    extractor, images: torch.Tensor, val: ImageDataset, labels: torch.Tensor | None = None
) -> dict[str, Any]:
    """FID, precision and recall of ``images`` (N, C, H, W) in [0, 1] against ``val`` on ``extractor``'s
    features; when the extractor is a classifier, the classes it sees (modes covered, normalised entropy,
    histogram) and, given the ``labels`` the images were asked for, the share it recognises as asked."""
    from genlab.classification.evaluate import predict
    from genlab.evaluation.accuracy import class_accuracy
    from genlab.evaluation.features import reference_features
    from genlab.metrics.coverage import mode_coverage
    from genlab.metrics.distances import fid_from_features
    from genlab.metrics.precision_recall import precision_recall

    real = reference_features(extractor, val)
    fake = extractor(images)
    out: dict[str, Any] = {"fid": fid_from_features(real, fake)}
    # recall sees the collapse a class histogram cannot: many samples of one class that are all alike
    scores = precision_recall(real, fake)
    out.update(precision=scores["precision"], recall=scores["recall"])
    judge = extractor.classifier
    if judge is not None:
        predicted = predict(judge, images).argmax(1)
        k = judge.config.num_classes
        cover = mode_coverage(predicted, k)
        out.update(
            modes_covered=float(cover["modes_covered"]),
            normalized_entropy=cover["normalized_entropy"],
            class_histogram=cover["histogram"],
        )
        if labels is not None and k > int(labels.max()):
            out["recognised"] = class_accuracy(predicted, labels.cpu(), k)["accuracy"]
    return out
