"""Attacks and defenses: property tests on tiny models (eps = 0 is the identity, the eps-ball and [0, 1]
hold, targeted attacks hit, more PGD steps are never weaker, bad arguments are refused, the model is left
as it was), the linearity argument, patches, the black-box attack and adversarial training."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from genlab.adversarial.attacks import fgsm, optimize_input, pgd
from genlab.adversarial.blackbox import QueryOracle, nes_attack
from genlab.adversarial.linearity import linearity_demo, score_shift
from genlab.adversarial.patch import apply_patch, evaluate_patch, printability, total_variation, train_patch
from genlab.data import load_splits
from genlab.errors import GenlabError


def _easy_model() -> nn.Module:
    """A linear classifier of 4x4 images into 3 classes (class k: the mean of its third of the pixels), with
    BatchNorm and dropout so that train/eval mode matters; every class is reachable inside [0, 1]."""
    w = torch.zeros(3, 16)
    for k, part in enumerate((range(0, 5), range(5, 10), range(10, 16))):
        w[k, list(part)] = 4.0 / len(part)
    linear = nn.Linear(16, 3)
    with torch.no_grad():
        linear.weight.copy_(w)
        linear.bias.zero_()
    model = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(16), nn.Dropout(0.2), linear)
    model.train()  # attacks must not leave it in eval mode, nor change BatchNorm statistics
    return model


def _batch(n: int = 12):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


ATTACKS = {
    "fgsm": lambda m, x, y, eps: fgsm(m, x, y, eps),
    "pgd-linf": lambda m, x, y, eps: pgd(m, x, y, eps, steps=5, generator=torch.Generator().manual_seed(0)),
    "pgd-l2": lambda m, x, y, eps: pgd(
        m, x, y, eps, steps=5, norm="l2", generator=torch.Generator().manual_seed(0)
    ),
    "nes": lambda m, x, y, eps: nes_attack(
        m, x, y, eps, budget=200, samples=5, generator=torch.Generator().manual_seed(0)
    )[0],
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_eps_zero_is_the_identity(name):
    model, (x, y) = _easy_model(), _batch()
    assert torch.equal(ATTACKS[name](model, x, y, 0.0), x)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_outputs_stay_in_the_ball_and_in_range_and_the_model_is_untouched(name):
    model, (x, y) = _easy_model(), _batch()
    before = _snapshot(model)
    adv = ATTACKS[name](model, x, y, 0.1)
    if name == "pgd-l2":
        assert ((adv - x).flatten(1).norm(dim=1) <= 0.1 + 1e-5).all()
    else:
        assert (adv - x).abs().max() <= 0.1 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # weights and BatchNorm statistics


def test_targeted_pgd_hits_its_target_on_an_easy_model():
    model, (x, _) = _easy_model(), _batch()
    target = torch.full((len(x),), 2)
    adv = pgd(model, x, target, eps=1.0, steps=50, targeted=True)
    model.eval()
    assert (model(adv).argmax(1) == 2).all()


def test_more_pgd_steps_are_never_weaker():
    model, (x, y) = _easy_model(), _batch(64)
    model.eval()
    accs = []
    for steps in (1, 5, 20, 40):
        adv = pgd(model, x, y, 0.05, steps=steps, alpha=0.01, generator=torch.Generator().manual_seed(0))
        accs.append(float((model(adv).argmax(1) == y).float().mean()))
    assert all(b <= a + 1e-9 for a, b in zip(accs, accs[1:], strict=False))


def test_bad_arguments_are_refused_with_clear_errors():
    model, (x, y) = _easy_model(), _batch()
    with pytest.raises(GenlabError, match="epsilon must be >= 0"):
        fgsm(model, x, y, -0.1)
    with pytest.raises(GenlabError, match=r"must lie in \[0, 1\]"):
        pgd(model, x * 2 - 1, y, 0.1)
    with pytest.raises(GenlabError, match="labels must be"):
        fgsm(model, x, y[:3], 0.1)
    with pytest.raises(GenlabError, match="labels must be"):
        fgsm(model, x, y.float(), 0.1)
    with pytest.raises(GenlabError, match="unknown norm"):
        pgd(model, x, y, 0.1, norm="l1")
    with pytest.raises(GenlabError, match="query budget"):
        QueryOracle(model, 0)


def test_fgsm_equals_its_formula():
    model, (x, y) = _easy_model(), _batch()
    model.eval()
    xr = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(model(xr), y, reduction="sum").backward()
    expected = (x + 0.05 * xr.grad.sign()).clamp(0, 1)
    model.train()
    assert torch.allclose(fgsm(model, x, y, 0.05), expected)


def test_the_query_oracle_counts_and_refuses_past_the_budget():
    model, (x, y) = _easy_model(), _batch(2)
    adv, used = nes_attack(model, x, y, 0.3, budget=50, samples=5)
    assert (used <= 50).all() and (used > 0).all()
    oracle = QueryOracle(model, 3)
    oracle(x[:2])
    with pytest.raises(GenlabError, match="exhausted"):
        oracle(x[:2])


def test_optimize_input_reaches_the_target_and_the_regulariser_holds_it_close():
    model, (x, _) = _easy_model(), _batch(4)
    target = torch.full((4,), 1)
    far = optimize_input(model, target, source=x, steps=100, lam=0.0)
    near = optimize_input(model, target, source=x, steps=100, lam=10.0)
    model.eval()
    assert (model(far).argmax(1) == 1).all()
    assert (near - x).norm() < (far - x).norm()
    dream = optimize_input(model, target, shape=(1, 4, 4), steps=100)
    assert dream.shape == (4, 1, 4, 4) and (model(dream).argmax(1) == 1).all()


def test_linearity_shift_is_eps_times_the_l1_norm():
    w = torch.tensor([1.0, -2.0, 0.5])
    assert score_shift(w, 0.1) == pytest.approx(0.35)
    assert score_shift(w, 0.1, "w") == pytest.approx(0.525)
    train, _ = load_splits("digits", 0, 0.1, None)
    report = linearity_demo(train, (0, 1), (0.0, 0.05, 0.1))
    assert report.dimension == 64 and report.clean_accuracy > 0.95
    for row in report.rows:
        assert row["measured_shift"] == pytest.approx(row["predicted_shift"], rel=1e-4)
        assert row["max_pixel_change"] <= row["eps"] + 1e-6
    assert report.rows[-1]["accuracy"] < report.rows[0]["accuracy"]


def test_patch_pieces():
    images = torch.zeros(2, 3, 6, 6)
    patch = torch.ones(3, 2, 2)
    out = apply_patch(images, patch, torch.tensor([0, 4]), torch.tensor([1, 3]))
    assert out[0, :, 0:2, 1:3].eq(1).all() and out[0].sum() == 12
    assert out[1, :, 4:6, 3:5].eq(1).all() and out[1].sum() == 12
    assert total_variation(torch.ones(1, 4, 4)) == 0
    assert printability(torch.ones(3, 2, 2)) == 0  # white is printable
    model, (x, y) = _easy_model(), _batch(32)
    before = copy.deepcopy(model.state_dict())
    learned = train_patch(model, x, target=0, size=2, steps=30, batch_size=8)
    assert learned.shape == (1, 2, 2) and 0 <= learned.min() and learned.max() <= 1
    result = evaluate_patch(model, learned, x, y, 0)
    assert 0 <= result.success_rate <= 1
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
