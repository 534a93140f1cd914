"""Adaptive attacks (Athalye et al. 2018): BPDA gets a gradient through a preprocessing that has none, EOT
averages a random defense's predictions, and an attacker who knows a detector's score evades it where
plain PGD is caught. Each on a toy case whose answer is known."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genlab.adversarial.adaptive import BPDA, ExpectedPrediction, Preprocessed, detector_aware_pgd
from genlab.adversarial.attacks import pgd
from genlab.errors import GenlabError


def quantize(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * 4) / 4  # zero gradient almost everywhere


def _linear() -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([torch.ones(16), -torch.ones(16)]) / 4)
        model[1].bias.copy_(torch.tensor([-1.8, 1.8]))  # class 0 while the pixels' mean exceeds 0.45
    return model.requires_grad_(False)


def test_bpda_runs_the_transform_forward_and_the_identity_backward():
    x = torch.rand(3, 1, 4, 4, requires_grad=True)
    out = BPDA(quantize)(x)
    assert torch.equal(out, quantize(x.detach()))
    (grad,) = torch.autograd.grad((out * torch.arange(16.0).view(1, 1, 4, 4)).sum(), x)
    assert torch.equal(grad, torch.arange(16.0).view(1, 1, 4, 4).expand(3, 1, 4, 4))


def test_bpda_breaks_the_gradient_masking_of_a_quantizing_defense():
    model = _linear()
    x = torch.full((8, 1, 4, 4), 0.6)  # quantized to 0.5: class 0; at 0.3 it would be 0.25, class 1
    y = torch.zeros(8, dtype=torch.long)
    masked = Preprocessed(quantize, model)  # autograd through round: a zero gradient, PGD cannot move
    g = torch.Generator().manual_seed(0)
    stuck = pgd(masked, x, y, 0.3, 10, generator=g)
    assert (masked(stuck).argmax(1) == 0).all()
    broken = pgd(Preprocessed(BPDA(quantize), model), x, y, 0.3, 10, generator=g)
    assert (masked(broken).argmax(1) == 1).all()


def test_expected_prediction_is_the_log_of_the_mean_softmax():
    draws = [torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 3.0, 0.0]])]

    class Random(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return draws[(self.calls - 1) % 2] + 0 * x.sum()

    out = ExpectedPrediction(Random(), 2)(torch.zeros(1, 1, 1, 1))
    expected = ((F.softmax(draws[0], 1) + F.softmax(draws[1], 1)) / 2).log()
    assert torch.allclose(out, expected)
    with pytest.raises(GenlabError, match="at least 1 sample"):
        ExpectedPrediction(Random(), 0)


def test_an_attacker_who_knows_the_detector_evades_it_where_pgd_is_caught():
    # the label flips once the first 8 pixels sum past 4.4; the detector flags a sum of the first 4 past 2.2
    class Sum(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = x.flatten(1)[:, :8].sum(1)
            return torch.stack([4.4 - s, s - 4.4], 1) * 4

    def score(x: torch.Tensor) -> torch.Tensor:
        return F.relu(x.flatten(1)[:, :4].sum(1) - 2.0)

    model, threshold = Sum(), 0.2
    x = torch.full((6, 1, 4, 4), 0.4)  # sums 3.2 and 1.6: class 0, unflagged
    y = torch.zeros(6, dtype=torch.long)
    plain = pgd(model, x, y, 0.3, 20, generator=torch.Generator().manual_seed(0))
    assert (model(plain).argmax(1) == 1).all() and (score(plain) > threshold).all()
    aware = detector_aware_pgd(
        model, score, threshold, x, y, 0.3, 40, generator=torch.Generator().manual_seed(0)
    )
    assert (model(aware).argmax(1) == 1).all() and (score(aware) <= threshold).all()
    assert (aware - x).abs().max() <= 0.3 + 1e-6
