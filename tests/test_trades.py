"""TRADES (Zhang et al. 2019): the inner maximisation of the KL divergence and the training loss, checked
against direct computation, and reachable from `genlab train classifier --adversarial trades`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genlab.adversarial.training import AdversarialClassifierTask, AdversarialTrainingConfig, trades_adversary
from genlab.classification.task import ClassifierDataConfig
from genlab.errors import GenlabError


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 3))


def _kl(model: nn.Module, x: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.kl_div(F.log_softmax(model(adv), 1), F.softmax(model(x), 1), reduction="none").sum(1)


def test_the_trades_adversary_raises_the_kl_inside_the_ball():
    model = _model()
    x = torch.rand(32, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    adv = trades_adversary(model, x, eps=0.1, steps=10, generator=g)
    assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    # far above the KL of its start (x + 0.001 noise) and of a random corner of the ball
    corner = (x + 0.1 * torch.randn(x.shape, generator=g).sign()).clamp(0, 1)
    kl = _kl(model, x, adv)
    assert (kl > _kl(model, x, corner)).float().mean() >= 0.9 and kl.mean() > 1e-3
    more = trades_adversary(model, x, eps=0.1, steps=30, generator=torch.Generator().manual_seed(2))
    assert _kl(model, x, more).mean() >= 0.9 * kl.mean()


def test_the_trades_loss_is_clean_cross_entropy_plus_beta_kl():
    adv_cfg = AdversarialTrainingConfig("trades", eps=0.1, steps=2, beta=3.0)
    task = AdversarialClassifierTask(ClassifierDataConfig("digits", augment=False), adv_cfg, widths=(4,))
    model = task.model.eval()
    x = task.train_data.images[:8]
    y = task.train_data.labels[:8]
    adv = 1 - x  # far from x, so that the KL term is not negligible
    loss, logs = task.trades_loss(model, x, adv, y)
    with torch.no_grad():
        p, q = F.softmax(model(x), 1), F.softmax(model(adv), 1)
        kl = (p * (p.log() - q.log())).sum(1).mean()
        expected = F.cross_entropy(model(x), y) + 3.0 * kl
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert logs["train_kl"].item() == pytest.approx(kl.item(), rel=1e-4)
    with pytest.raises(GenlabError, match="beta"):
        AdversarialTrainingConfig("trades", beta=-1.0)
    with pytest.raises(GenlabError, match="not both"):  # noisy pixels leave the [0, 1] attacks work in
        AdversarialClassifierTask(ClassifierDataConfig("digits", noise_sigma=0.25), adv_cfg, widths=(4,))


def test_train_classifier_trades_from_the_command_line(tmp_path):
    from click.testing import CliRunner

    from genlab import rundir
    from genlab.cli import cli

    args = ["train", "classifier", "--data", "digits", "--widths", "8", "--hidden", "16",
            "--batch-size", "16", "--steps", "2", "--eval-every", "0", "--adversarial", "trades",
            "--adv-eps", "0.1", "--adv-steps", "2", "--trades-beta", "2",
            "--no-progress", "--out", str(tmp_path / "t")]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    config = rundir.read_config(tmp_path / "t", kind="classifier")
    assert config["adversarial"]["method"] == "trades" and config["adversarial"]["beta"] == 2.0
    bad = CliRunner().invoke(cli, [*args[:-2], "--trades-beta", "-1", "--out", str(tmp_path / "u")])
    assert bad.exit_code != 0 and "--trades-beta must be between 0 and 1000" in bad.output
