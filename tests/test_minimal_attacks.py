"""Minimal-perturbation attacks on an affine classifier, whose least L2 perturbation is known in closed form:
min over classes k of (f_y - f_k) / ||w_y - w_k||. DeepFool's first step lands on it, Carlini-Wagner
approaches it from above, and the PGD-L2 bisection finds a radius a little above it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genlab.adversarial.attacks import pgd
from genlab.adversarial.minimal import carlini_wagner_l2, deepfool, l2_norms, pgd_minimal_l2
from genlab.errors import GenlabError


def _affine(classes: int = 4) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, classes))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(classes, 16, generator=g))
        model[1].bias.copy_(torch.randn(classes, generator=g) * 0.1)
    return model.requires_grad_(False)


def _least_l2(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The exact least L2 perturbation of each image for the affine model (no box constraint)."""
    w, b = model[1].weight, model[1].bias
    f = x.flatten(1) @ w.T + b
    y = f.argmax(1)
    gap = f.gather(1, y[:, None]) - f  # f_y - f_k >= 0
    norm = (w[y][:, None, :] - w[None, :, :]).norm(dim=2)  # ||w_y - w_k||
    distance = gap / norm.clamp_min(1e-12)
    distance[torch.arange(len(x)), y] = torch.inf
    return distance.amin(1)


def _images(n: int = 16) -> torch.Tensor:
    # near mid-gray, so that the least perturbations (a few hundredths) never meet the [0, 1] box
    return 0.5 + 0.05 * torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(1))


def test_deepfool_finds_the_least_perturbation_of_an_affine_classifier():
    model, x = _affine(), _images()
    with torch.no_grad():
        y = model(x).argmax(1)
    adv, flipped = deepfool(model, x, overshoot=0.0)
    assert flipped.all() and (model(adv).argmax(1) != y).all()
    exact = _least_l2(model, x)
    assert exact.max() < 0.4  # no pixel can move by 0.45: the box is never in the way
    assert torch.allclose(l2_norms(adv, x), exact, rtol=1e-3, atol=1e-3)
    more, _ = deepfool(model, x, overshoot=0.5)
    assert torch.allclose(l2_norms(more, x), 1.5 * l2_norms(adv, x), rtol=1e-3)


def test_carlini_wagner_approaches_the_least_perturbation_from_above():
    model, x = _affine(), _images(8)
    with torch.no_grad():
        y = model(x).argmax(1)
    adv, fooled = carlini_wagner_l2(model, x, y, steps=100, searches=6, c=1.0, lr=0.01)
    assert fooled.all() and (model(adv).argmax(1) != y).all()
    found, exact = l2_norms(adv, x), _least_l2(model, x)
    assert (found >= exact - 1e-4).all() and (found <= 1.1 * exact + 1e-3).all()
    with pytest.raises(GenlabError, match="Carlini-Wagner needs"):
        carlini_wagner_l2(model, x, y, c=0)


def test_the_pgd_bisection_finds_a_radius_just_above_the_least():
    model, x = _affine(), _images(8)
    with torch.no_grad():
        y = model(x).argmax(1)
    radius = pgd_minimal_l2(model, x, y, high=0.5, bisections=12, steps=20)
    exact = _least_l2(model, x)
    # at least the least perturbation; a little more, as the cross-entropy's gradient mixes every class
    # and does not point straight at the nearest boundary
    assert (radius >= exact - 1e-4).all() and (radius <= 1.1 * exact).all()
    # the radius per image reaches PGD itself: each image attacked within its own ball
    adv = pgd(model, x, y, radius, 20, norm="l2", generator=torch.Generator().manual_seed(0))
    assert (l2_norms(adv, x) <= radius + 1e-5).all()
    unreachable = pgd_minimal_l2(model, x, y, high=1e-4, bisections=2)
    assert torch.isinf(unreachable).all()
