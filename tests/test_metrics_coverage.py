"""Precision/recall, mode coverage and nearest neighbours on hand-built point sets."""

from __future__ import annotations

import math

import pytest
import torch

from genlab.errors import GenlabError
from genlab.metrics.coverage import mode_coverage, nearest_neighbours
from genlab.metrics.precision_recall import knn_radii, precision_recall


def test_knn_radii_by_hand():
    points = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert knn_radii(points, k=1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert knn_radii(points, k=2).tolist() == [3.0, 2.0, 3.0, 6.0]


def test_precision_and_recall_on_hand_built_sets():
    real = torch.arange(10.0)[:, None]  # 0..9 on a line: with k = 1 every ball has radius 1
    fake = torch.tensor([[0.5], [4.2], [100.0], [101.0]])  # two realistic, two far away
    pr = precision_recall(real, fake, k=1)
    assert pr["precision"] == pytest.approx(0.5)
    # Fake balls (k = 1): 0.5 -> 3.7, 4.2 -> 3.7, 100 -> 1, 101 -> 1; they cover reals 0..7 of 0..9.
    assert pr["recall"] == pytest.approx(0.8)


def test_identical_sets_have_full_precision_and_recall_and_a_collapse_loses_recall():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 3, generator=g)
    assert precision_recall(real, real.clone()) == {"precision": 1.0, "recall": 1.0, "k": 3}
    collapsed = real[:2].repeat(10, 1) + 0.01 * torch.randn(20, 3, generator=g)  # two tight modes
    pr = precision_recall(real, collapsed)
    assert pr["precision"] == 1.0 and pr["recall"] < 0.05  # realistic, but the variety is gone


def test_mode_coverage_counts_and_entropy():
    uniform = mode_coverage(torch.arange(10).repeat(5), 10)
    assert uniform["modes_covered"] == 10 and uniform["normalized_entropy"] == pytest.approx(1.0)
    collapsed = mode_coverage(torch.tensor([3] * 199 + [4]), 10)
    assert collapsed["modes_covered"] == 1  # one stray sample of 4 is below 10% of a fair share (20)
    assert collapsed["histogram"][3] == 199
    p = torch.tensor([0.995, 0.005])
    assert collapsed["entropy"] == pytest.approx(float(-(p * p.log()).sum()))
    assert mode_coverage(torch.zeros(7, dtype=torch.long), 10)["entropy"] == 0.0
    assert math.isclose(mode_coverage(torch.tensor([0, 1]), 2)["normalized_entropy"], 1.0)


def test_nearest_neighbours_find_copies():
    training = torch.rand(50, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    samples = torch.stack([training[7], training[30] + 0.5])
    nn = nearest_neighbours(samples, training, chunk=1)
    assert nn["indices"][0] == 7 and nn["distances"][0] == 0.0
    assert nn["distances"][1] > 0.0


def test_bad_arguments_are_clear():
    with pytest.raises(GenlabError, match="k must be"):
        knn_radii(torch.zeros(3, 2), k=3)
    with pytest.raises(GenlabError, match="feature sizes differ"):
        precision_recall(torch.zeros(5, 2), torch.zeros(5, 3))
