"""The classifier, its augmentation and its evaluation, on hand-built cases."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genlab.classification import evaluate_classifier, predict
from genlab.data.augment import random_affine
from genlab.data.base import ImageDataset
from genlab.nn import Classifier, ClassifierConfig


def test_identity_affine_returns_the_images():
    x = torch.rand(4, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    y = random_affine(x, g, degrees=0.0, translate=0.0, scale=(1.0, 1.0))
    assert torch.allclose(y, x, atol=1e-5)


def test_affine_is_fixed_by_the_generator_and_stays_in_range():
    x = torch.rand(8, 1, 28, 28)
    a = random_affine(x, torch.Generator().manual_seed(3))
    b = random_affine(x, torch.Generator().manual_seed(3))
    c = random_affine(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1


def test_affine_translation_stays_within_its_bound():
    x = torch.zeros(64, 1, 21, 21)
    x[:, 0, 10, 10] = 1.0
    y = random_affine(x, torch.Generator().manual_seed(0), degrees=0.0, translate=0.25, scale=(1.0, 1.0))
    coords = torch.arange(21.0)
    cy = (y[:, 0].sum(2) * coords).sum(1) / y[:, 0].sum((1, 2))
    cx = (y[:, 0].sum(1) * coords).sum(1) / y[:, 0].sum((1, 2))
    shift = torch.stack([cx - 10, cy - 10], 1).abs()
    # A shift of t in normalised [-1, 1] coordinates is t * W / 2 pixels; translate bounds it by 2 * 0.25.
    assert shift.max() <= 0.5 * 21 / 2 + 1e-3
    assert shift.max() > 2.0  # and it does move the dot
    assert y.sum((1, 2, 3)).allclose(
        torch.ones(64), atol=1e-4
    )  # bilinear resampling keeps an inner dot's mass


def test_normalisation_lives_inside_the_model():
    cfg = ClassifierConfig(
        in_channels=3, image_size=8, widths=(4,), hidden=8, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.2)
    )
    model = Classifier(cfg).eval()
    x = torch.rand(2, 3, 8, 8)
    expected = (x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.5, 0.25, 0.2]).view(
        1, 3, 1, 1
    )
    assert torch.allclose(model.normalize(x), expected)
    assert model(x).shape == (2, 10) and model.features(x).shape == (2, 8)


class FixedLogits(nn.Module):
    """Predicts class 0 for images whose mean is below 0.5 and class 1 otherwise."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([-(m - 0.5) * self.scale, (m - 0.5) * self.scale], 1)


def test_accuracy_on_a_hand_built_case_and_independent_of_batch_size():
    images = torch.cat([torch.full((6, 1, 4, 4), 0.2), torch.full((4, 1, 4, 4), 0.8)])
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])  # one dark image is labelled 1: 9 of 10 right
    data = ImageDataset("hand", images, ["x"] * 10, labels, ["dark", "bright"], [{}] * 10)
    model = FixedLogits().train()
    m1 = evaluate_classifier(model, data, batch_size=3)
    m2 = evaluate_classifier(model, data, batch_size=10)
    assert m1["accuracy"] == pytest.approx(0.9) and m1["n"] == 10
    assert m1 == pytest.approx(m2)
    p = torch.sigmoid(torch.tensor(6.0))  # softmax of logits (3, -3): 1 / (1 + e^-6)
    expected_loss = -(9 * torch.log(p) + torch.log(1 - p)) / 10
    assert m1["loss"] == pytest.approx(float(expected_loss), rel=1e-5)
    assert model.training  # the mode is restored
    assert torch.allclose(predict(model, images).sum(1), torch.ones(10))
