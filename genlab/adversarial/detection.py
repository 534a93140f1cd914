"""Input sanitisation and detection. Feature squeezing (Xu et al. 2018, "Feature squeezing: detecting
adversarial examples in deep neural networks"): squeeze the input (fewer bits per pixel, a median filter)
and compare the predictions; a natural image barely changes its prediction, an adversarial one, whose
perturbation lives in the bits and the pixel noise the squeezers remove, often does. The score is the
largest L1 distance between the softmax of the input and of a squeezed copy (their eq. 1). The maximum
softmax probability (Hendrycks & Gimpel 2017) is the baseline out-of-distribution score. Thresholds are
set on clean held-out images for a chosen false-positive rate, which is then measured on other clean ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlab.adversarial.attacks import check_inputs
from genlab.classification.evaluate import predict
from genlab.errors import GenlabError


def bit_depth(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantise [0, 1] pixels to 2^bits levels."""
    if bits < 1:
        raise GenlabError(f"bit depth must be at least 1 (got {bits})")
    levels = 2**bits - 1
    return torch.round(x * levels) / levels


def median_filter(x: torch.Tensor, size: int = 2) -> torch.Tensor:
    """Median over each size x size neighbourhood (padding by reflection to keep the image size)."""
    pad = (size // 2, (size - 1) // 2, size // 2, (size - 1) // 2)
    padded = F.pad(x, pad, mode="reflect") if size > 1 else x
    patches = padded.unfold(2, size, 1).unfold(3, size, 1)
    return patches.reshape(*patches.shape[:4], -1).median(dim=-1).values


def squeeze_score(model: nn.Module, x: torch.Tensor, bits: int = 1, median: int = 2) -> torch.Tensor:
    """max(||p(x) - p(bits(x))||_1, ||p(x) - p(median(x))||_1) per image."""
    check_inputs(x)
    p = predict(model, x)
    a = (p - predict(model, bit_depth(x, bits))).abs().sum(1)
    b = (p - predict(model, median_filter(x, median))).abs().sum(1)
    return torch.maximum(a, b)


def msp_score(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """1 - the maximum softmax probability: high for inputs the model is unsure of."""
    return 1.0 - predict(model, x).amax(1)


@dataclass
class Detector:
    """Flags inputs whose score exceeds ``threshold`` (set for a false-positive rate on clean images)."""

    score: str  # "squeeze" or "msp"
    threshold: float
    target_fpr: float

    def scores(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return squeeze_score(model, x) if self.score == "squeeze" else msp_score(model, x)

    def flag(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self.scores(model, x) > self.threshold


def fit_detector(
    model: nn.Module, clean: torch.Tensor, score: str = "squeeze", fpr: float = 0.05
) -> Detector:
    """The threshold that flags a fraction ``fpr`` of ``clean`` images."""
    if score not in ("squeeze", "msp"):
        raise GenlabError(f"unknown detector score '{score}'; choose squeeze or msp")
    if not 0 < fpr < 1:
        raise GenlabError(f"the false-positive rate must lie in (0, 1) (got {fpr})")
    det = Detector(score, 0.0, fpr)
    values = det.scores(model, clean)
    det.threshold = float(torch.quantile(values.double(), 1.0 - fpr))
    return det


def auroc(negatives: torch.Tensor, positives: torch.Tensor) -> float:
    """Area under the ROC curve: the chance that a positive scores above a negative (ties count half)."""
    diff = positives[:, None].double() - negatives[None, :].double()
    return float((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean())
