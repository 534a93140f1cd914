"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019, "Certified adversarial robustness via randomized
smoothing"). The smoothed classifier g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I), is robust by
construction: if the top class has probability at least pA and every other at most pB, g's label cannot
change within the L2 radius sigma / 2 (Phi^-1(pA) - Phi^-1(pB)) (their Theorem 1); with pB = 1 - pA this
is sigma Phi^-1(pA). PREDICT and CERTIFY (their Algorithm 2 / pseudocode) estimate g from Monte Carlo
samples of the base classifier f with a failure probability alpha: PREDICT abstains unless a binomial test
separates the top two counts; CERTIFY guesses the class from n0 samples, then bounds pA from below with a
one-sided Clopper-Pearson interval over n fresh samples. The radius holds with probability 1 - alpha over
the sampling, for any attack whatever; that is what "certified" means here.

The base classifier is any model of images in [0, 1] (noisy inputs are not clipped, as in the paper):
a classifier trained on Gaussian noise (`genlab train classifier --noise-sigma`), or a standard one behind
a one-shot diffusion denoiser (``DenoisedClassifier``, denoised smoothing).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from scipy.stats import beta, binomtest, norm
from torch import nn

from genlab.adversarial.attacks import check_inputs, eval_mode
from genlab.adversarial.evaluation import spread
from genlab.checks import check_fraction, check_range
from genlab.errors import GenlabError
from genlab.nn.classifier import Classifier

ABSTAIN = -1  # the label PREDICT and CERTIFY return when the samples cannot decide
MAX_BATCH_NUMBERS = 50_000_000  # pixels of one batch of noisy copies (200 MB), whatever the image size


@torch.no_grad()
def noise_counts(
    model: nn.Module,
    x: torch.Tensor,
    sigma: float,
    num: int,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(N, K) counts of the base classifier's labels on ``num`` noisy copies x + sigma e of each image."""
    counts = []
    batch_size = max(1, min(batch_size, MAX_BATCH_NUMBERS // max(1, x[0].numel())))
    with eval_mode(model):
        for image in x:
            row: torch.Tensor | None = None
            for start in range(0, num, batch_size):
                size = min(batch_size, num - start)
                noise = torch.randn((size, *image.shape), generator=generator).to(image)
                logits = model(image.expand(size, *image.shape) + sigma * noise)
                found = torch.bincount(logits.argmax(1).cpu(), minlength=logits.shape[1])
                row = found if row is None else row + found
            counts.append(row)
    return torch.stack(counts)


def lower_confidence_bound(successes: int, trials: int, alpha: float) -> float:
    """The one-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion: the alpha quantile
    of Beta(k, n - k + 1), and 0 when k = 0 (Cohen et al.'s LowerConfBound)."""
    if successes == 0:
        return 0.0
    return float(beta.ppf(alpha, successes, trials - successes + 1))


def _check(sigma: float, n: int, alpha: float) -> None:
    check_range("sigma", sigma, 1e-6, 10.0)
    check_range("n", n, 1, 10_000_000)
    check_fraction("alpha", alpha)
    if alpha == 0:
        raise GenlabError("`alpha` must be above 0: no finite sample bounds a probability with certainty")


def smoothed_predict(
    model: nn.Module,
    x: torch.Tensor,
    sigma: float,
    n: int = 1000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PREDICT (Cohen et al. 2019, section 3.2): per image the top class of ``n`` noisy samples, or ABSTAIN
    when a two-sided binomial test of the top two counts against p = 1/2 gives a p-value above ``alpha``.
    A returned label is g(x) with probability at least 1 - alpha."""
    check_inputs(x)
    _check(sigma, n, alpha)
    counts = noise_counts(model, x, sigma, n, batch_size, generator)
    top = counts.topk(2, dim=1)
    labels = []
    for (first, second), label in zip(top.values.tolist(), top.indices[:, 0].tolist(), strict=True):
        p = binomtest(first, first + second, 0.5).pvalue if first + second else 1.0
        labels.append(label if p <= alpha else ABSTAIN)
    return torch.tensor(labels)


def certify(
    model: nn.Module,
    x: torch.Tensor,
    sigma: float,
    n0: int = 100,
    n: int = 10_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CERTIFY (Cohen et al. 2019, section 3.2): guess the top class cA from ``n0`` noisy samples, count it
    in ``n`` fresh ones, bound pA below by Clopper-Pearson at level ``alpha``; the radius is
    sigma Phi^-1(pA_lower), or ABSTAIN (radius 0) when pA_lower <= 1/2. Returns (labels, radii)."""
    check_inputs(x)
    _check(sigma, n, alpha)
    check_range("n0", n0, 1, 10_000_000)
    guess = noise_counts(model, x, sigma, n0, batch_size, generator).argmax(1)
    counts = noise_counts(model, x, sigma, n, batch_size, generator)
    hits = counts.gather(1, guess[:, None]).squeeze(1)
    labels, radii = [], []
    for label, k in zip(guess.tolist(), hits.tolist(), strict=True):
        p_lower = lower_confidence_bound(k, n, alpha)
        labels.append(label if p_lower > 0.5 else ABSTAIN)
        radii.append(certified_radius(p_lower, sigma))
    return torch.tensor(labels), torch.tensor(radii, dtype=torch.float64)


def certified_radius(p_lower: float, sigma: float) -> float:
    """sigma Phi^-1(p) for a lower bound p > 1/2 on the top class's probability (Cohen et al.'s Theorem 1
    with pB = 1 - pA), else 0."""
    return sigma * float(norm.ppf(p_lower)) if p_lower > 0.5 else 0.0


def certified_accuracy(
    labels: torch.Tensor, radii: torch.Tensor, y: torch.Tensor, at: tuple[float, ...]
) -> list[float]:
    """Cohen et al.'s certified test accuracy at each radius r of ``at``: the share of images certified
    with the right label and a radius of at least r."""
    right = labels == y
    return [float((right & (radii >= r)).double().mean()) for r in at]


def max_certifiable_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest radius CERTIFY can give with ``n`` samples, when all n agree: sigma Phi^-1(alpha^(1/n))."""
    return certified_radius(lower_confidence_bound(n, n, alpha), sigma)


@dataclass
class CertifyConfig:
    """`genlab defend certify`: the smoothing noise, the Monte Carlo budget and the radii reported."""

    sigma: float = 0.25
    n0: int = 100  # samples that choose the class
    n: int = 10_000  # samples that bound its probability
    alpha: float = 0.001  # failure probability of each certificate
    predict_n: int = 1000  # samples of PREDICT's accuracy (0: skip it)
    images: int = 500  # held-out images (a seeded spread over the classes)
    radii: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
    batch_size: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.sigma, self.n, self.alpha)
        check_range("n0", self.n0, 1, 10_000_000)
        check_range("predict_n", self.predict_n, 0, 10_000_000)
        check_range("images", self.images, 1, 1_000_000)
        check_range("batch_size", self.batch_size, 1, 100_000)
        if not self.radii or min(self.radii) < 0:
            raise GenlabError("give radii of 0 or more to report certified accuracy at, e.g. 0,0.25,0.5")


def certify_report(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: CertifyConfig,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Certify ``cfg.images`` of the held-out ``images`` and report: certified accuracy at each radius,
    abstentions, the base classifier's accuracy on clean and on noisy images, PREDICT's accuracy, each
    image's label and radius, and the seconds it took."""
    x, y = spread(images, labels, cfg.images, cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    if isinstance(model, Classifier):
        model = model.fused()
    with eval_mode(model), torch.no_grad():
        clean = float((model(x).argmax(1) == y).double().mean())
        noised = x + cfg.sigma * torch.randn(x.shape, generator=g)
        noisy = float((model(noised).argmax(1) == y).double().mean())
    start = time.perf_counter()
    pred, radii = certify(model, x, cfg.sigma, cfg.n0, cfg.n, cfg.alpha, cfg.batch_size, g)
    seconds = time.perf_counter() - start
    curve = certified_accuracy(pred, radii, y, cfg.radii)
    report: dict[str, Any] = {
        "sigma": cfg.sigma,
        "n0": cfg.n0,
        "n": cfg.n,
        "alpha": cfg.alpha,
        "images": len(x),
        "base_clean_accuracy": clean,
        "base_noisy_accuracy": noisy,
        "certified_accuracy": {f"{r:g}": a for r, a in zip(cfg.radii, curve, strict=True)},
        "abstained": float((pred == ABSTAIN).double().mean()),
        "max_radius": max_certifiable_radius(cfg.sigma, cfg.n, cfg.alpha),
        "certify_seconds": seconds,
        "labels": pred.tolist(),
        "radii": [round(r, 5) for r in radii.tolist()],
        "truth": y.tolist(),
    }
    log(
        f"base classifier: {clean:.1%} on the {len(x)} clean images, {noisy:.1%} under noise sigma "
        f"{cfg.sigma:g}"
    )
    log(
        f"CERTIFY (n0 {cfg.n0}, n {cfg.n:,}, alpha {cfg.alpha:g}) took {seconds / 60:.1f} min; "
        f"abstained on {report['abstained']:.1%}; the largest radius n samples can certify is "
        f"{report['max_radius']:.3f}"
    )
    for r, a in zip(cfg.radii, curve, strict=True):
        log(f"  certified accuracy at L2 radius {r:<5g} {a:6.1%}")
    if cfg.predict_n:
        predicted = smoothed_predict(model, x, cfg.sigma, cfg.predict_n, cfg.alpha, cfg.batch_size, g)
        report["predict_n"] = cfg.predict_n
        report["predict_accuracy"] = float((predicted == y).double().mean())
        report["predict_abstained"] = float((predicted == ABSTAIN).double().mean())
        log(
            f"PREDICT (n {cfg.predict_n:,}): {report['predict_accuracy']:.1%} right, "
            f"{report['predict_abstained']:.1%} abstained"
        )
    return report


class DenoisedClassifier(nn.Module):
    """Denoised smoothing's base classifier (Salman et al. 2020; Carlini et al. 2023, "(Certified!!)
    Adversarial Robustness for Free!", section 3): a noisy image x + sigma e is denoised in one call of a
    diffusion model at the noise level that matches sigma, then classified by an ordinary classifier.
    In the diffusion model's [-1, 1] space the noise has standard deviation 2 sigma, so the x0 estimate is
    the VP denoiser's D(2 (x + sigma e) - 1; 2 sigma): the timestep t whose sqrt((1 - abar_t) / abar_t)
    equals 2 sigma (their eq. 2, with the image scaled by sqrt(abar_t)). The class-conditional side of a
    model is not used: the denoiser does not know the class."""

    def __init__(self, classifier: nn.Module, pipe: Any, sigma: float) -> None:
        super().__init__()
        from genlab.diffusion.denoiser import VPDenoiser

        if pipe.image_shape != (classifier.config.in_channels, classifier.config.image_size):
            raise GenlabError("the diffusion model and the classifier must work on images of the same shape")
        self.classifier = classifier
        self.unet = pipe.unet
        self.denoiser = VPDenoiser(pipe.unet, pipe.schedule, pipe.diffusion.parameterization)
        self.sigma = float(sigma)
        if not pipe.schedule.sigma_min <= 2 * self.sigma <= pipe.schedule.sigma_max:
            raise GenlabError(f"sigma {sigma:g} lies outside the noise levels of the diffusion model")

    def denoise(self, noisy: torch.Tensor) -> torch.Tensor:
        """The one-shot x0 estimate of noisy images (in [0, 1] space, noise sigma), back in [0, 1]."""
        x0 = self.denoiser(noisy * 2 - 1, 2 * self.sigma)
        return ((x0 + 1) / 2).clamp(0, 1)

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.denoise(noisy))


def read_certify_report(path: str | Path) -> dict[str, Any]:
    """A report `genlab defend certify` wrote, checked enough to draw its curve: one-line errors for a
    missing file, text that is not JSON, or lists of labels, radii and truths that do not match."""
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GenlabError(
            f"no certify report at {path}; give the JSON `genlab defend certify` wrote"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GenlabError(f"cannot read {path} as a certify report ({e.__class__.__name__})") from None
    lists = [report.get(k) if isinstance(report, dict) else None for k in ("labels", "radii", "truth")]
    if not all(isinstance(v, list) for v in lists) or len({len(v) for v in lists}) != 1:
        raise GenlabError(f"{path} is not a certify report: it needs lists of labels, radii and truth")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in lists[1]):
        raise GenlabError(f"{path} is not a certify report: its radii must be numbers")
    return report
