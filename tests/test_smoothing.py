"""Randomized smoothing against cases whose answer is known: the Clopper-Pearson bound in closed form, and
CERTIFY on a base classifier whose class probabilities under the noise are known exactly (a threshold on one
pixel: P(class 1) = Phi(t / sigma)), for which Cohen et al.'s radius sigma Phi^-1(pA) is also the exact
robust radius of the smoothed classifier."""

from __future__ import annotations

import json

import pytest
import torch
from scipy.stats import norm
from torch import nn

from genlab.adversarial.smoothing import (
    ABSTAIN,
    CertifyConfig,
    certified_accuracy,
    certify,
    lower_confidence_bound,
    max_certifiable_radius,
    smoothed_predict,
)
from genlab.errors import GenlabError


class Threshold(nn.Module):
    """Class 1 where the first pixel lies below ``t``, else class 0 (two logits)."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        below = (x[:, 0, 0, 0] < self.t).float()
        return torch.stack([1 - below, below], 1)


def test_the_clopper_pearson_bound_has_its_closed_forms():
    # all n successes: the bound solves p^n = alpha; none: 0; and it lies below the observed share
    assert lower_confidence_bound(10, 10, 0.001) == pytest.approx(0.001 ** (1 / 10), rel=1e-9)
    assert lower_confidence_bound(10_000, 10_000, 0.001) == pytest.approx(0.001**1e-4, rel=1e-9)
    assert lower_confidence_bound(0, 50, 0.05) == 0.0
    # one failure in n: P(X >= n - 1 | p) = p^n + n p^(n-1) (1 - p) = alpha at the bound
    p = lower_confidence_bound(19, 20, 0.05)
    assert p**20 + 20 * p**19 * (1 - p) == pytest.approx(0.05, rel=1e-6)
    assert max_certifiable_radius(0.25, 10_000, 0.001) == pytest.approx(0.25 * norm.ppf(0.001**1e-4))


def test_certify_bounds_a_known_class_probability_from_below():
    sigma, p_a = 0.5, 0.9
    model = Threshold(sigma * norm.ppf(p_a))  # a pixel at 0 under N(0, sigma^2) falls below t with prob. 0.9
    x = torch.zeros(200, 1, 2, 2)
    labels, radii = certify(
        model, x, sigma, n0=50, n=2000, alpha=0.01, generator=torch.Generator().manual_seed(0)
    )
    true_radius = sigma * norm.ppf(p_a)  # exact for this classifier: the boundary is a hyperplane
    assert (labels == 1).all()
    # the bound holds with probability 1 - alpha per certificate: at most a few of 200 may exceed the truth
    assert (radii > true_radius).double().mean() <= 0.03
    # and with 2,000 samples it is tight: pA_lower within about 2.3 standard errors of 0.9
    assert true_radius - 0.1 < radii.mean() < true_radius


def test_certify_and_predict_abstain_when_two_classes_tie():
    model = Threshold(0.0)  # pA = 1/2 exactly
    x = torch.zeros(50, 1, 2, 2)
    g = torch.Generator().manual_seed(1)
    labels, radii = certify(model, x, 0.25, n0=20, n=500, alpha=0.001, generator=g)
    assert (labels == ABSTAIN).all() and (radii == 0).all()
    predicted = smoothed_predict(model, x, 0.25, n=500, alpha=0.001, generator=g)
    assert (predicted == ABSTAIN).double().mean() >= 0.95
    # a clear majority is predicted: pA = Phi(2) = 0.977
    predicted = smoothed_predict(Threshold(0.5), x, 0.25, n=500, alpha=0.001, generator=g)
    assert (predicted == 1).all()


def test_certified_accuracy_counts_right_labels_certified_at_least_that_far():
    labels = torch.tensor([1, 1, ABSTAIN, 0])
    radii = torch.tensor([0.6, 0.3, 0.0, 0.9], dtype=torch.float64)
    y = torch.tensor([1, 1, 1, 1])  # the last is certified, but for the wrong class
    assert certified_accuracy(labels, radii, y, (0.0, 0.3, 0.5, 0.7)) == [0.5, 0.5, 0.25, 0.0]


def test_bad_smoothing_settings_get_one_line_errors():
    with pytest.raises(GenlabError, match="alpha"):
        CertifyConfig(alpha=0.0)
    with pytest.raises(GenlabError, match="sigma"):
        CertifyConfig(sigma=-1.0)
    with pytest.raises(GenlabError, match="radii"):
        CertifyConfig(radii=(-0.5,))


def test_gaussian_noise_training_adds_noise_of_the_asked_deviation():
    from genlab.classification.task import ClassifierDataConfig, ClassifierTask

    task = ClassifierTask(ClassifierDataConfig("digits", augment=False, noise_sigma=0.3), widths=(4,))
    images = task.train_data.images[:256]
    noisy = task.augmented(images, torch.Generator().manual_seed(0))
    assert (noisy - images).std().item() == pytest.approx(0.3, rel=0.02)
    assert "val_noisy_acc" in task.evaluate(task.model)
    with pytest.raises(GenlabError, match="noise_sigma"):
        ClassifierDataConfig("digits", noise_sigma=-0.1)


def test_the_denoiser_of_denoised_smoothing_runs_at_the_matching_noise_level():
    from types import SimpleNamespace

    from genlab.adversarial.smoothing import DenoisedClassifier
    from genlab.diffusion.schedules import NoiseSchedule, ScheduleConfig
    from genlab.nn.classifier import Classifier, ClassifierConfig

    schedule = NoiseSchedule(ScheduleConfig())
    seen = []

    def net(x_t, t, **cond):
        seen.append(t)
        return torch.zeros_like(x_t)  # eps = 0: the estimate is x_t / sqrt(abar)

    pipe = SimpleNamespace(
        unet=net, schedule=schedule, diffusion=SimpleNamespace(parameterization="eps"), image_shape=(1, 8)
    )
    clf = Classifier(ClassifierConfig(image_size=8, widths=(4,)))
    model = DenoisedClassifier(clf, pipe, sigma=0.25)
    noisy = torch.full((3, 1, 8, 8), 0.6)
    out = model.denoise(noisy)
    # model space: 2 * 0.6 - 1 = 0.2 is x = x0 + 0.5 e, so x_t = 0.2 sqrt(abar) and the estimate is 0.2 again
    assert torch.allclose(out, noisy, atol=1e-5)
    # the timestep of noise level sqrt((1 - abar_t) / abar_t) = 2 sigma: between the training steps around it
    t = int(seen[0][0])
    assert schedule.sigmas[t] <= 0.5 <= schedule.sigmas[t + 1]


def test_certify_command(tmp_path):
    from click.testing import CliRunner

    from genlab.cli import cli

    def run(*args: str) -> str:
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    clf = tmp_path / "smooth"
    fast = ["--data", "digits", "--widths", "8", "--hidden", "16", "--batch-size", "32", "--no-progress"]
    text = run("train", "classifier", *fast, "--steps", "30", "--noise-sigma", "0.25", "--out", str(clf))
    assert "under the training noise" in text
    text = run(
        "defend", "certify", str(clf), "--images", "12", "--n0", "10", "--n", "200", "--predict-n", "50"
    )
    report = json.loads((clf / "certify.json").read_text())
    assert report["sigma"] == 0.25 and report["n"] == 200 and len(report["radii"]) == 12  # sigma from the run
    curve = [report["certified_accuracy"][r] for r in ("0", "0.25", "0.5", "0.75")]
    assert curve == sorted(curve, reverse=True) and curve[-1] == 0.0  # 200 samples cannot certify 0.75
    assert report["max_radius"] < 0.75 and (clf / "certify.png").is_file()
    assert "certified accuracy at L2 radius 0.5" in text and "PREDICT (n 50)" in text
    bad = CliRunner().invoke(cli, ["defend", "certify", str(clf), "--alpha", "0"])
    assert bad.exit_code != 0 and "--alpha must be above 0" in bad.output
    # a second curve drawn beside an earlier one; a file that is no report is refused in one line
    run("defend", "certify", str(clf), "--images", "4", "--n", "50", "--predict-n", "0", "--sigma", "0.5",
        "--compare", str(clf / "certify.json"), "--out", str(tmp_path / "wide.json"))  # fmt: skip
    assert (tmp_path / "wide.png").is_file() and json.loads((tmp_path / "wide.json").read_text())[
        "sigma"
    ] == 0.5
    (tmp_path / "junk.json").write_text('{"labels": [1], "radii": [0.1, 0.2], "truth": [1]}')
    bad = CliRunner().invoke(cli, ["defend", "certify", str(clf), "--compare", str(tmp_path / "junk.json")])
    assert bad.exit_code != 0 and "is not a certify report" in bad.output and "Traceback" not in bad.output
