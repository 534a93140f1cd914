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
from genlab.adversarial.patch import (
    apply_patch,
    evaluate_patch,
    printability,
    random_places,
    total_variation,
    train_patch,
)
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
    result = evaluate_patch(model, learned, x, y, 0, generator=torch.Generator().manual_seed(3))
    # the same places drawn again by hand: the share of non-target images the patch turns into the target
    keep = y != 0
    rows, cols = random_places(int(keep.sum()), x.shape[2], 2, torch.Generator().manual_seed(3))
    with torch.no_grad():
        model.eval()  # as evaluate_patch judges: BatchNorm's running statistics, no dropout
        hit = model(apply_patch(x[keep], learned, rows, cols)).argmax(1) == 0
        base = model(x[keep]).argmax(1) == 0
        model.train()
    assert result.success_rate == pytest.approx(hit.float().mean().item())
    assert result.clean_target_rate == pytest.approx(base.float().mean().item())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_backdoor_poisoning_and_its_detectors():
    from genlab.adversarial.backdoor import (
        PoisonConfig,
        activation_clustering,
        poison,
        precision_recall,
        spectral_scores,
        stamp,
    )

    train, _ = load_splits("digits", 0, 0.1, None)
    stamped = stamp(torch.zeros(1, 1, 8, 8), 2)
    assert stamped[0, 0, 5:7, 5:7].tolist() == [[0, 1], [1, 0]] and stamped.sum() == 2
    dirty, mask = poison(train, PoisonConfig(fraction=0.1, target=3, size=2))
    candidates = int((train.labels != 3).sum())
    assert int(mask.sum()) == round(0.1 * candidates)
    assert (train.labels[mask] != 3).all() and (dirty.labels[mask] == 3).all()
    assert torch.equal(dirty.images[~mask], train.images[~mask])
    assert torch.equal(dirty.labels[~mask], train.labels[~mask])  # the rest keep their labels
    with pytest.raises(GenlabError, match="fraction"):
        PoisonConfig(fraction=1.5)

    # Synthetic activations: class 0 one blob, class 1 a blob plus 10% far-away poisoned points.
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(400, 16, generator=g)
    labels = torch.cat([torch.zeros(200), torch.ones(200)]).long()
    truth = torch.zeros(400, dtype=torch.bool)
    truth[380:] = True
    feats[380:] += 6.0
    flagged = activation_clustering(feats, labels)
    assert precision_recall(flagged, truth) == {
        "precision": 1.0,
        "recall": 1.0,
        "flagged": 20,
        "poisoned": 20,
    }
    top = spectral_scores(feats, labels).topk(20).indices
    assert truth[top].all()


def test_adversarial_training_runs_resumes_and_reports_robust_accuracy(tmp_path):
    from genlab import rundir
    from genlab.adversarial.training import AdversarialClassifierTask, AdversarialTrainingConfig
    from genlab.classification.task import ClassifierDataConfig
    from genlab.train import TrainConfig, Trainer, seed_step

    seed_step(0, -1)
    adv = AdversarialTrainingConfig("pgd", eps=0.1, steps=2, eval_steps=2, eval_images=50, clean_weight=0.5)
    task = AdversarialClassifierTask(ClassifierDataConfig("digits"), adv, widths=(8,), hidden=16)
    cfg = TrainConfig(
        steps=3, batch_size=16, eval_every=0, sample_every=0, checkpoint_every=0, progress=False
    )
    result = Trainer(task, cfg, tmp_path / "run").train()
    assert 0 <= result.metrics["val_robust_acc"] <= result.metrics["val_acc"] + 0.1
    record = [r for r in rundir.read_metrics(tmp_path / "run") if r["event"] == "train"][-1]
    assert "train_adv_acc" in record and "train_acc" in record
    config = rundir.read_config(tmp_path / "run", kind="classifier")
    assert config["adversarial"]["method"] == "pgd"
    again = AdversarialClassifierTask.from_run_config(config)
    assert again.adversarial == adv
    with pytest.raises(GenlabError, match="unknown adversarial training"):
        AdversarialTrainingConfig("cw")


def test_a_classifier_task_is_adversarial_when_asked_and_resumes_as_it_was_made():
    """`genlab train classifier` builds its task with classifier_task and resumes it with
    classifier_task_from_run_config, which reads the kind back from the run's config."""
    from genlab.adversarial.training import (
        AdversarialClassifierTask,
        AdversarialTrainingConfig,
        classifier_task,
        classifier_task_from_run_config,
    )
    from genlab.classification.task import ClassifierDataConfig, ClassifierTask
    from genlab.nn.pretrained import config_to_dict

    data = ClassifierDataConfig("digits", augment=False)
    adv = AdversarialTrainingConfig("fgsm", eps=0.2)
    for adversarial, kind in ((None, ClassifierTask), (adv, AdversarialClassifierTask)):
        task = classifier_task(data, adversarial, widths=(4,), hidden=8)
        assert type(task) is kind and task.data == data and task.model.config.widths == (4,)
        config = {"model": config_to_dict(task.model.config), **task.config_sections()}
        again = classifier_task_from_run_config(config)
        assert type(again) is kind and again.config_sections() == task.config_sections()


def test_attack_and_defend_commands(tmp_path):
    import json

    from click.testing import CliRunner

    from genlab.cli import cli
    from genlab.data import save_grid

    def run(*args: str):
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    clf = tmp_path / "clf"
    fast = ["--data", "digits", "--widths", "8", "--hidden", "16", "--batch-size", "32", "--no-progress"]
    run("train", "classifier", *fast, "--steps", "40", "--out", str(clf))
    robust = tmp_path / "robust"
    text = run(
        "train",
        "classifier",
        *fast,
        "--steps",
        "2",
        "--adversarial",
        "pgd",
        "--adv-eps",
        "0.1",
        "--adv-steps",
        "2",
        "--adv-alpha",
        "0.05",
        "--adv-warmup",
        "2",
        "--out",
        str(robust),
    )
    assert "under PGD" in text
    out = tmp_path / "attack.json"
    run(
        "attack",
        "eval",
        str(clf),
        "--n",
        "40",
        "--steps",
        "3",
        "--attacks",
        "fgsm,pgd,nes",
        "--blackbox-n",
        "2",
        "--budget",
        "60",
        "--out",
        str(out),
    )
    report = json.loads(out.read_text())
    assert set(report["accuracy"]) == {"fgsm", "pgd", "nes"} and report["checks"][0]["passed"]
    assert (tmp_path / "attack_curve.png").is_file() and (tmp_path / "attack_examples.png").is_file()

    train, _ = load_splits("digits", 0, 0.1, None)
    digit = tmp_path / "digit.png"
    save_grid(digit, train.images[:1], scale=1)
    run(
        "attack",
        "image",
        str(clf),
        str(digit),
        "--eps",
        "0.2",
        "--steps",
        "3",
        "--out",
        str(tmp_path / "a.png"),
    )
    run(
        "attack",
        "image",
        str(clf),
        str(digit),
        "--target",
        "3",
        "--steps",
        "3",
        "--out",
        str(tmp_path / "b.png"),
    )
    run(
        "attack",
        "optimize",
        str(clf),
        "--target",
        "7",
        "--steps",
        "5",
        "--n",
        "2",
        "--out",
        str(tmp_path / "c.png"),
    )
    text = run(
        "attack",
        "patch",
        str(clf),
        "--target",
        "0",
        "--size",
        "3",
        "--steps",
        "5",
        "--out",
        str(tmp_path / "d.png"),
    )
    assert "held-out images" in text
    text = run("attack", "transfer", str(clf), str(clf), "--eps", "0.1", "--steps", "2", "--n", "20")
    assert "transfer" in text
    text = run("attack", "linearity", "--data", "digits", "--classes", "0,1", "--eps", "0,0.1")
    assert "eps*||w||_1" in text
    bad = CliRunner().invoke(cli, ["attack", "eval", str(clf), "--eps", "-0.1"])
    assert bad.exit_code == 2 and "epsilon" in bad.output

    text = run(
        "defend",
        "backdoor-demo",
        "--data",
        "digits",
        "--trigger-size",
        "2",
        "--steps",
        "10",
        "--no-progress",
        "--out",
        str(tmp_path / "bd"),
    )
    result = json.loads((tmp_path / "bd" / "backdoor.json").read_text())
    assert {"clean", "poisoned", "detection"} <= set(result)


def test_feature_squeezers_and_detector_thresholds():
    from genlab.adversarial.detection import auroc, bit_depth, fit_detector, median_filter

    x = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    assert set(bit_depth(x, 1).unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(median_filter(torch.full((1, 1, 5, 5), 0.3), 2), torch.full((1, 1, 5, 5), 0.3))
    dot = torch.zeros(1, 1, 5, 5)
    dot[0, 0, 2, 2] = 1.0
    assert median_filter(dot, 3).sum() == 0  # a lone bright pixel is noise to a median
    assert auroc(torch.zeros(5), torch.ones(5)) == 1.0 and auroc(torch.ones(5), torch.ones(5)) == 0.5
    model, (images, _) = _easy_model(), _batch(100)
    det = fit_detector(model, images, "msp", fpr=0.1)
    assert float(det.flag(model, images).float().mean()) == pytest.approx(0.1, abs=0.02)
    with pytest.raises(GenlabError, match="false-positive rate"):
        fit_detector(model, images, "msp", fpr=0.0)
