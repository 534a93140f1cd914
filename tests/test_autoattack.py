"""APGD, Square and the AutoAttack ensemble: the DLR loss against hand values, the checkpoints against the
paper's recurrence, APGD never weaker than its first iterate, Square's query count, the ensemble's worst
case, and agreement with torchattacks (when it is installed: `pip install --no-deps torchattacks`)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import genlab.adversarial.apgd as apgd_module
from genlab.adversarial.apgd import _random_start, apgd, apgd_targeted, checkpoints, dlr_loss, halve_step
from genlab.adversarial.autoattack import AutoAttackConfig, autoattack
from genlab.adversarial.square import square_attack, square_fraction
from genlab.data import load_splits
from genlab.errors import GenlabError


@pytest.fixture(scope="module")
def digits_model():
    """A small MLP trained for a second on scikit-learn's 8x8 digits (10 classes), and 120 held-out digits."""
    torch.manual_seed(0)
    train, val = load_splits("digits", 0, 0.1, None)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        idx = torch.randint(0, len(train.images), (128,), generator=g)
        loss = F.cross_entropy(model(train.images[idx]), train.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().requires_grad_(False)
    return model, val.images[:120], val.labels[:120]


class Wavy(nn.Module):
    """Four classes whose logits oscillate along random directions of 8x8 images: a loss surface full of
    local maxima, where a step can lose what the last one won."""

    def __init__(self, frequency: float = 20.0):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w", torch.randn(64, 4, generator=g) / 8)
        self.register_buffer("phase", torch.rand(4, generator=g) * 6)
        self.amplitude = nn.Parameter(torch.tensor(3.0), requires_grad=False)  # torchattacks finds the device
        self.frequency = frequency

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w
        return self.amplitude * torch.sin(self.frequency * s + self.phase) + s


def _wavy_batch(n: int = 300):
    model = Wavy().eval()
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model, x, model(x).argmax(1)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_dlr_loss_is_its_formula_and_ignores_the_logits_scale():
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0], [3.0, 1.0, 0.0, -1.0]])
    y = torch.tensor([0, 1])
    # sorted 3, 1, 0, -1: -(z_y - max other) / (z_pi1 - z_pi3)
    assert dlr_loss(z, y).tolist() == pytest.approx([-(3 - 1) / 3, -(1 - 3) / 3])
    # targeted toward class 2: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    target = torch.tensor([2, 2])
    assert dlr_loss(z, y, target).tolist() == pytest.approx([-(3 - 0) / 3.5, -(1 - 0) / 3.5])
    assert torch.allclose(dlr_loss(5 * z - 2, y), dlr_loss(z, y))
    assert torch.allclose(dlr_loss(5 * z - 2, y, target), dlr_loss(z, y, target))
    with pytest.raises(GenlabError, match="at least 4 classes"):
        dlr_loss(z[:, :3], y, target)


def test_checkpoints_follow_the_papers_recurrence():
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    assert checkpoints(100) == [round(100 * q) for q in p[1:]] == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(1) == [1] and checkpoints(10)[0] == 2


@pytest.mark.parametrize("case", ["digits", "wavy"])
def test_apgd_is_never_weaker_than_its_first_iterate(digits_model, case, monkeypatch):
    model, x, y = digits_model if case == "digits" else _wavy_batch()
    with torch.no_grad():
        right = model(x).argmax(1) == y
    # APGD draws its start for the images classified right only
    x, y, eps = x[right], y[right], 0.08 if case == "digits" else 0.003
    start = _random_start(x, eps, "linf", torch.Generator().manual_seed(3))
    start = start.requires_grad_(True)
    first_loss = F.cross_entropy(model(start), y, reduction="none")
    (grad,) = torch.autograd.grad(first_loss.sum(), start)
    first = (x + (start + 2 * eps * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1)  # x^(1)
    seen = []  # the loss of every iterate APGD evaluates

    def recording(*args):
        out = gradient(*args)
        seen.append(out[1])
        return out

    gradient = apgd_module._gradient
    monkeypatch.setattr(apgd_module, "_gradient", recording)
    adv = apgd(model, x, y, eps, steps=20, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        right = model(adv).argmax(1) == y
        best = torch.stack(seen).amax(0)
        assert torch.allclose(F.cross_entropy(model(adv), y, reduction="none")[right], best[right])
        for point in (start, first):
            out = model(point)
            fooled = out.argmax(1) != y
            assert not (fooled & right).any()  # an image fooled at a first iterate stays fooled
            loss = F.cross_entropy(model(adv), y, reduction="none")
            assert (loss[right] >= F.cross_entropy(out, y, reduction="none")[right] - 1e-5).all()
    assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert _accuracy(model, adv, y) < _accuracy(model, first, y)


def test_apgd_targeted_and_its_checks(digits_model):
    model, x, y = digits_model
    g = torch.Generator().manual_seed(0)
    adv = apgd_targeted(model, x, y, 0.1, steps=10, targets=3, generator=g)
    assert _accuracy(model, adv, y) < _accuracy(model, x, y)
    assert torch.equal(apgd(model, x, y, 0.0), x)
    with pytest.raises(GenlabError, match="unknown APGD loss"):
        apgd(model, x, y, 0.1, loss="hinge")
    with pytest.raises(GenlabError, match="needs target classes"):
        apgd(model, x, y, 0.1, loss="dlr-targeted")
    with pytest.raises(GenlabError, match="1 to 9 target classes"):
        apgd_targeted(model, x, y, 0.1, targets=10)
    l2 = apgd(model, x, y, 1.0, steps=10, norm="l2", generator=g)
    assert ((l2 - x).flatten(1).norm(dim=1) <= 1.0 + 1e-5).all()


def test_square_counts_its_queries_and_stops_at_the_first_success(digits_model):
    model, x, y = digits_model
    assert [square_fraction(i, 10000) for i in (0, 10, 11, 51, 8001)] == pytest.approx(
        [0.8, 0.8, 0.4, 0.2, 0.8 / 512]
    )
    assert square_fraction(100, 1000) == pytest.approx(0.8 / 16)  # rescaled: 1,000 queries -> iteration 1,000
    adv, used = square_attack(model, x, y, 0.1, queries=50, generator=torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= 0.1 + 1e-6 and (used >= 1).all() and (used <= 50).all()
    with torch.no_grad():
        wrong_at_once = model(x).argmax(1) != y
        fooled = model(adv).argmax(1) != y
    assert (used[wrong_at_once] == 1).all() or not wrong_at_once.any()
    assert (used[~fooled] == 50).all()  # a survivor used its whole budget
    assert fooled.float().mean() > wrong_at_once.float().mean()
    with pytest.raises(GenlabError, match="at least 1 query"):
        square_attack(model, x, y, 0.1, queries=0)


def test_autoattack_is_the_worst_case_of_its_components(digits_model):
    model, x, y = digits_model
    cfg = AutoAttackConfig(steps=10, targets=3, queries=100)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    adv, broken = autoattack(model, x, y, 0.08, cfg, generator=g())
    ensemble = _accuracy(model, adv, y)
    # its first component sees the same images and draws as the attack alone, so it can only add to it
    alone = apgd(model, x, y, 0.08, 10, generator=g())
    assert ensemble <= _accuracy(model, alone, y)
    assert _accuracy(model, alone, y) == pytest.approx(_accuracy(model, x, y) - broken["apgd-ce"] / len(x))
    only_t = autoattack(model, x, y, 0.08, AutoAttackConfig(10, 3, components=("apgd-t",)), generator=g())[0]
    targeted = apgd_targeted(model, x, y, 0.08, 10, targets=3, generator=g())
    assert _accuracy(model, only_t, y) == _accuracy(model, targeted, y)
    assert sum(broken.values()) == round((_accuracy(model, x, y) - ensemble) * len(x))
    with pytest.raises(GenlabError, match="unknown AutoAttack components fab"):
        AutoAttackConfig(components=("fab",))


@pytest.mark.parametrize("case", ["digits", "wavy"])
def test_genlab_agrees_with_torchattacks(digits_model, case):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = digits_model if case == "digits" else _wavy_batch()
    classes = 10 if case == "digits" else 4
    for eps in (0.05, 0.1) if case == "digits" else (0.003, 0.006):
        ours = _accuracy(model, apgd(model, x, y, eps, 20, generator=torch.Generator().manual_seed(0)), y)
        theirs = _accuracy(model, torchattacks.APGD(model, eps=eps, steps=20, seed=0)(x, y), y)
        assert abs(ours - theirs) <= 0.02, (eps, ours, theirs)
        ours = _accuracy(
            model,
            apgd_targeted(
                model, x, y, eps, 20, targets=classes - 1, generator=torch.Generator().manual_seed(0)
            ),
            y,
        )
        reference = torchattacks.APGDT(model, eps=eps, steps=20, seed=0, n_classes=classes)
        theirs = _accuracy(model, reference(x, y), y)
        assert abs(ours - theirs) <= 0.02, (eps, ours, theirs)


def test_a_checkpoint_halves_the_step_where_the_loss_stalled():
    rising = torch.arange(9.0)  # 8 steps, each a rise
    bumpy = torch.tensor([0.0, 1, 2, 3, 4, 5, 6, 5, 7])  # 7 rises of 8: above rho = 0.75 of them
    stalled = torch.tensor([0.0, 1, 2, 3, 4, 5, 6, 6, 6])  # 6 of 8: not
    losses = torch.stack([rising, bumpy, stalled, rising], 1)
    best = torch.tensor([8.0, 7, 6, 8])
    before = torch.tensor([1.0, 1, 1, 8])  # the last image's best has not risen since the last checkpoint
    halved = torch.tensor([False, False, False, False])
    assert halve_step(losses, best, before, halved).tolist() == [False, False, True, True]
    # condition 2 holds only where the step was not halved last time
    assert halve_step(losses, best, before, ~halved).tolist() == [False, False, True, False]
