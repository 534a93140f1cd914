"""Input sanitisation and detection. Feature squeezing (Xu et al. 2018, "Feature squeezing: detecting
adversarial examples in deep neural networks"): squeeze the input (fewer bits per pixel, a median filter)
and compare the predictions; a natural image barely changes its prediction, an adversarial one, whose
perturbation lives in the bits and the pixel noise the squeezers remove, often does. The score is the
largest L1 distance between the softmax of the input and of a squeezed copy (their eq. 1). The maximum
softmax probability (Hendrycks & Gimpel 2017) is the baseline out-of-distribution score. Thresholds are
set on clean held-out images for a chosen false-positive rate, which is then measured on other clean ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlab.adversarial.adaptive import BPDA, Preprocessed, detector_aware_pgd
from genlab.adversarial.attacks import check_inputs, eval_mode, fgsm, pgd
from genlab.adversarial.evaluation import accuracy, spread
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


# the detector's two squeezers at its defaults, Xu et al.'s choice for MNIST
SQUEEZERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "1-bit depth": lambda x: bit_depth(x, 1),
    "2x2 median": lambda x: median_filter(x, 2),
}


def squeeze_score(model: nn.Module, x: torch.Tensor, bits: int = 1, median: int = 2) -> torch.Tensor:
    """max(||p(x) - p(bits(x))||_1, ||p(x) - p(median(x))||_1) per image, in eval mode, batched."""
    check_inputs(x)
    with eval_mode(model), torch.no_grad():
        parts = [squeeze_distance(model, x[i : i + 500], bits, median) for i in range(0, len(x), 500)]
    return torch.cat(parts) if parts else torch.zeros(0)


def squeeze_distance(model: nn.Module, x: torch.Tensor, bits: int = 1, median: int = 2) -> torch.Tensor:
    """The squeezing score as a differentiable function of x, for an attacker who knows the detector:
    the bit-depth reduction, whose gradient is zero almost everywhere, passes the gradient through
    unchanged (BPDA); the median filter has a gradient of its own (into the median pixel)."""
    p = F.softmax(model(x), 1)
    a = (p - F.softmax(model(BPDA(lambda v: bit_depth(v, bits))(x)), 1)).abs().sum(1)
    b = (p - F.softmax(model(median_filter(x, median)), 1)).abs().sum(1)
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


SCORE_LABELS = {"squeeze": "feature squeezing", "msp": "max softmax probability"}


def attacked_sets(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: tuple[float, ...], seed: int = 0
) -> dict[str, torch.Tensor]:
    """The adversarial inputs a detector should flag: FGSM and PGD-40 images of ``x`` at each epsilon."""
    sets = {}
    for e in eps:
        sets[f"FGSM eps {e}"] = fgsm(model, x, y, e)
        sets[f"PGD-40 eps {e}"] = pgd(model, x, y, e, 40, generator=torch.Generator().manual_seed(seed))
    return sets


def ood_sets(
    names: tuple[str, ...], n: int, channels: int, size: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Out-of-distribution inputs, ``n`` of each: ``noise`` (uniform pixels), or the training images of a
    data set (mnist, digits, shapes, ...) drawn at random, converted to ``channels`` and ``size``."""
    from genlab.data import load_splits
    from genlab.data.images import resize_batch

    sets = {}
    for name in names:
        g = torch.Generator().manual_seed(seed)
        if name == "noise":
            sets["uniform noise"] = torch.rand(n, channels, size, size, generator=g)
            continue
        other, _ = load_splits(name, 0, 0.1, None)
        images = other.images[torch.randperm(len(other), generator=g)[:n]]
        if images.shape[1] != channels:
            images = images.mean(1, keepdim=True).expand(-1, channels, -1, -1)
        sets[f"{name} images"] = resize_batch(images, size)
    return sets


def detection_report(
    model: nn.Module,
    calib: torch.Tensor,
    test: torch.Tensor,
    sets: dict[str, torch.Tensor],
    fpr: float = 0.05,
    log: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Per score (feature squeezing, maximum softmax): a detector fitted on the clean ``calib`` images for
    the false-positive rate ``fpr``, the rate it reaches on the other clean images ``test``, and the share
    of each set of ``sets`` it flags, with the AUROC of clean ``test`` against that set."""
    report = {}
    for score, label in SCORE_LABELS.items():
        det = fit_detector(model, calib, score, fpr)
        clean_scores = det.scores(model, test)
        reached = float((clean_scores > det.threshold).float().mean())
        log(
            f"{label}: threshold {det.threshold:.4f}; false positives on {len(test)} other clean images: "
            f"{reached:.1%} (asked {fpr:.0%})"
        )
        flagged = {}
        for name, images in sets.items():
            s = det.scores(model, images)
            flagged[name] = {
                "flagged": float((s > det.threshold).float().mean()),
                "auroc": auroc(clean_scores, s),
            }
            log(f"  {name:>18}: {flagged[name]['flagged']:6.1%} flagged, AUROC {flagged[name]['auroc']:.3f}")
        report[score] = {"threshold": det.threshold, "false_positive_rate": reached, "sets": flagged}
    return report


def detection_demo(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    fpr: float = 0.05,
    eps: tuple[float, ...] = (0.1, 0.3),
    ood: tuple[str, ...] = ("noise", "shapes"),
    n: int = 400,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, dict]:
    """`genlab defend detect`: ``n`` held-out images (a seeded random subset), half to set the thresholds
    and half to test them, against FGSM and PGD images of the test half at each of ``eps`` and the
    out-of-distribution sets ``ood`` (see detection_report)."""
    x, y = spread(images, labels, n, seed)
    half = len(x) // 2
    calib, test, y_test = x[:half], x[half:], y[half:]
    cfg = model.config
    sets = attacked_sets(model, test, y_test, eps, seed)
    sets.update(ood_sets(ood, len(test), cfg.in_channels, cfg.image_size, seed))
    report = detection_report(model, calib, test, sets, fpr, log)
    detector = fit_detector(model, calib, "squeeze", fpr)
    log(
        "adaptive: PGD-100 fooling the classifier on the image and on both squeezed copies while keeping "
        "the squeezing score under the threshold (BPDA through the bits)"
    )
    views = tuple(BPDA(squeezer) for squeezer in SQUEEZERS.values())
    report["adaptive"] = {}
    for e in eps:
        g = torch.Generator().manual_seed(seed)
        aware = detector_aware_pgd(
            model,
            lambda v: squeeze_distance(model, v),
            detector.threshold,
            test,
            y_test,
            e,
            100,
            views,
            generator=g,
        )
        row = {
            "oblivious": evasion(model, detector, sets[f"PGD-40 eps {e}"], y_test),
            "adaptive": evasion(model, detector, aware, y_test),
        }
        report["adaptive"][str(e)] = row
        log(
            f"  eps {e}: fooled the classifier unflagged: {row['oblivious']['evaded']:.1%} of the oblivious "
            f"PGD-40 images, {row['adaptive']['evaded']:.1%} of the detector-aware PGD-100 ones "
            f"(flagged {row['oblivious']['flagged']:.1%} -> {row['adaptive']['flagged']:.1%})"
        )
    report["squeezed_input"] = squeezed_input_report(model, test, y_test, eps, seed, log)
    return report


def evasion(model: nn.Module, detector: Detector, adv: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Of adversarial images ``adv`` of true labels ``y``: the share misclassified, the share flagged, and
    the share that does both the attacker wants, misclassified and not flagged."""
    with eval_mode(model), torch.no_grad():
        fooled = model(adv).argmax(1) != y
    flagged = detector.flag(model, adv)
    return {
        "fooled": float(fooled.float().mean()),
        "flagged": float(flagged.float().mean()),
        "evaded": float((fooled & ~flagged).float().mean()),
    }


def squeezed_input_report(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: tuple[float, ...],
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, float]]:
    """Each squeezer as an input transformation in front of the classifier: accuracy on clean images, on
    PGD-40 images crafted on the bare classifier (oblivious) and on PGD-40 through the squeezer with its
    backward pass replaced by the identity (BPDA, Athalye et al. 2018)."""
    report = {}
    for name, squeezer in SQUEEZERS.items():
        defended = Preprocessed(BPDA(squeezer), model)
        row = {"clean": accuracy(defended, x, y)}
        for e in eps:
            g = torch.Generator().manual_seed(seed)
            oblivious = pgd(model, x, y, e, 40, generator=g)
            adaptive = pgd(defended, x, y, e, 40, generator=torch.Generator().manual_seed(seed))
            row[f"oblivious {e}"] = accuracy(defended, oblivious, y)
            row[f"bpda {e}"] = accuracy(defended, adaptive, y)
        report[name] = row
        parts = ", ".join(
            f"eps {e}: {row[f'oblivious {e}']:.1%} oblivious, {row[f'bpda {e}']:.1%} BPDA" for e in eps
        )
        log(f"classifier on {name} input: clean {row['clean']:.1%}; PGD-40 at {parts}")
    return report
