"""Adaptive attacks: attacks that know the defense (Athalye, Carlini & Wagner 2018, "Obfuscated gradients
give a false sense of security"; Tramer et al. 2020, "On adaptive attacks to adversarial example defenses").
A defense scored only against an attacker who ignores it says little; these wrappers turn a defended
classifier into a model the ordinary attacks (PGD, APGD) can differentiate:

- ``BPDA``: a non-differentiable (or gradient-shattering) preprocessing g runs forward, and its backward
  pass is replaced by the identity, since g(x) ~ x (Backward Pass Differentiable Approximation, section
  4.1): the straight-through form x + (g(x) - x).detach().
- ``ExpectedPrediction``: a randomized defense is attacked through the expectation of its prediction over
  its randomness, log E[softmax] estimated from ``samples`` draws (Expectation over Transformation, section
  4.2), so each gradient is the average over draws.
- ``detector_aware_pgd``: against a detector, the attacker fools the classifier while keeping the
  detector's score low, descending both at once (Carlini & Wagner 2017, "Adversarial examples are not
  easily detected", section 5).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from genlab.adversarial.attacks import check_inputs, eval_mode, margin, project
from genlab.errors import GenlabError


class BPDA(nn.Module):
    """``transform`` forward, identity backward (Athalye et al. 2018, section 4.1)."""

    def __init__(self, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.transform = transform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = self.transform(x)
        return x + (out - x).detach()


class ExpectedPrediction(nn.Module):
    """log of the mean softmax of ``model`` over ``samples`` calls: for a randomized ``model`` (each call
    draws new randomness), the logits of its expected prediction, whose gradient averages the draws'
    (Athalye et al. 2018, section 4.2). With one sample it is ``model`` up to a shift of the logits."""

    def __init__(self, model: nn.Module, samples: int) -> None:
        super().__init__()
        if samples < 1:
            raise GenlabError(f"expectation over transformation needs at least 1 sample (got {samples})")
        self.model = model
        self.samples = samples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = sum(F.softmax(self.model(x), 1) for _ in range(self.samples)) / self.samples
        return probs.clamp_min(1e-30).log()


class Preprocessed(nn.Module):
    """``classifier`` applied after ``preprocess``: a defense by input transformation as one model."""

    def __init__(self, preprocess: nn.Module | Callable, classifier: nn.Module) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.preprocess(x))


def detector_aware_pgd(
    model: nn.Module,
    score: Callable[[torch.Tensor], torch.Tensor],
    threshold: float,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 40,
    views: tuple[Callable[[torch.Tensor], torch.Tensor], ...] = (),
    weight: float = 1.0,
    kappa: float = 2.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L-inf PGD against a classifier guarded by a detector that flags inputs whose differentiable
    ``score`` exceeds ``threshold``. A detector that compares the predictions on the input and on its
    transformed ``views`` is evaded by fooling the classifier on every view alike, toward one class: the
    loss ascended is Carlini & Wagner's capped targeted margin, min(z_t - max_{j != t} z_j, ``kappa``),
    summed over the input and its views, with t the clean image's most likely wrong class, minus
    ``weight`` relu(score - threshold / 2). Once a view is classified t by ``kappa``, only the other terms
    push. Each image returns its best iterate: fooled and unflagged with the lowest score, else the most
    fooling one. Step size 2.5 eps / steps, random start, as ``pgd``."""
    check_inputs(x, y, eps)
    if steps < 1 or weight < 0:
        raise GenlabError(f"the detector-aware attack needs steps >= 1, weight >= 0 (got {steps}, {weight})")
    x = x.detach()
    alpha = 2.5 * eps / steps
    noise = torch.rand(x.shape, generator=generator).to(x) * 2 - 1
    delta = (x + eps * noise).clamp(0, 1) - x
    best = x.clone()
    best_key = torch.full((len(x),), -torch.inf)
    with eval_mode(model):
        with torch.no_grad():
            target = model(x).scatter(1, y[:, None], -torch.inf).argmax(1)
        for i in range(steps + 1):
            point = (x + delta).requires_grad_(True)
            logits = model(point)
            m = margin(logits, y)
            fooling = margin(logits, target).clamp(max=kappa)
            for view in views:
                fooling = fooling + margin(model(view(point)), target).clamp(max=kappa)
            s = score(point)
            objective = fooling - weight * F.relu(s - threshold / 2)
            (grad,) = torch.autograd.grad(objective.sum(), point)
            with torch.no_grad():
                evades = (m < 0) & (s <= threshold)
                # fooled and unflagged beats everything, the less suspicious the better; then the most fooling
                key = torch.where(evades, 1e6 - s, -m).detach()
                better = key > best_key
                best[better], best_key[better] = point.detach()[better], key[better]
            if i == steps:
                break
            delta = project(delta + alpha * grad.sign(), eps, "linf")
            delta = (x + delta).clamp(0, 1) - x
    return best.detach()
