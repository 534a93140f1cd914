"""Attacks and defenses: property tests on tiny models (eps = 0 is the identity, the eps-ball and [0, 1]
hold, targeted attacks hit, more PGD steps are never weaker, bad arguments are refused, the model is left
as it was), the linearity argument, patches, the black-box attack and adversarial training."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from genlab.adversarial.apgd import apgd
from genlab.adversarial.attacks import fgsm, mi_fgsm, optimize_input, pgd
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
from genlab.adversarial.square import square_attack
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
    "mi-fgsm": lambda m, x, y, eps: mi_fgsm(m, x, y, eps, steps=5),
    "pgd-restarts": lambda m, x, y, eps: pgd(m, x, y, eps, steps=3, restarts=3),
    "apgd-ce": lambda m, x, y, eps: apgd(m, x, y, eps, steps=5, generator=torch.Generator().manual_seed(0)),
    "apgd-dlr": lambda m, x, y, eps: apgd(
        m, x, y, eps, 5, loss="dlr", generator=torch.Generator().manual_seed(0)
    ),
    "square": lambda m, x, y, eps: square_attack(
        m, x, y, eps, 20, generator=torch.Generator().manual_seed(0)
    )[0],
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


def test_pgd_restarts_are_never_weaker_and_mi_fgsm_in_one_step_is_fgsm():
    model, (x, y) = _easy_model(), _batch(64)
    model.eval()
    accs = []
    for restarts in (1, 2, 4):  # the same seed: the first run is the single run, the rest can only add
        adv = pgd(model, x, y, 0.05, steps=3, generator=torch.Generator().manual_seed(0), restarts=restarts)
        accs.append(float((model(adv).argmax(1) == y).float().mean()))
    assert accs[2] <= accs[1] <= accs[0]
    assert torch.allclose(mi_fgsm(model, x, y, 0.05, steps=1), fgsm(model, x, y, 0.05))
    with pytest.raises(GenlabError, match="restarts need a random start"):
        pgd(model, x, y, 0.1, restarts=2, random_start=False)


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
    strong = ["--eps", "0.2", "--attacks", "pgd,apgd-ce,apgd-t,square,autoattack", "--apgd-steps", "3",
              "--restarts", "2"]  # fmt: skip
    text = run("attack", "eval", str(clf), "--n", "30", "--steps", "3", *strong, "--queries", "10",
               "--out", str(tmp_path / "strong.json"))  # fmt: skip
    report = json.loads((tmp_path / "strong.json").read_text())
    table = report["accuracy"]
    assert report["worst_case"]["0.2"] <= min(row["0.2"] for row in table.values())
    assert table["autoattack"]["0.2"] <= table["apgd-ce"]["0.2"]  # its first component, on the same draws
    assert any(c["name"] == "Square does not beat the gradient attacks at eps 0.2" for c in report["checks"])
    assert "worst case per image over pgd, apgd-ce, apgd-t, square, autoattack" in text
    assert report["settings"]["apgd_steps"] == 3 and report["settings"]["queries"] == 10
    assert report["settings"]["restarts"] == 2
    run("attack", "eval", str(clf), "--n", "10", "--eps", "0,0.2", "--steps", "2", "--attacks", "deepfool,cw",
        "--out", str(tmp_path / "least.json"))  # fmt: skip
    least = json.loads((tmp_path / "least.json").read_text())
    for name in ("deepfool", "cw"):  # at radius 0 nothing counts; within radius 1.0 at most the clean share
        assert least["accuracy"][name]["0.0"] == least["clean_accuracy"] >= least["accuracy"][name]["0.2"]
    bad = CliRunner().invoke(cli, ["attack", "eval", str(clf), "--apgd-steps", "0"])
    assert bad.exit_code != 0 and "--apgd-steps, --queries and --restarts must be at least 1" in bad.output
    text = run("attack", "minimal", str(clf), "--n", "6", "--cw-steps", "5", "--cw-searches", "2",
               "--out", str(tmp_path / "minimal.json"))  # fmt: skip
    minimal = json.loads((tmp_path / "minimal.json").read_text())["attacks"]
    assert set(minimal) == {"deepfool", "cw", "pgd-l2"} and "median L2" in text
    bad = CliRunner().invoke(cli, ["attack", "minimal", str(clf), "--attacks", "jsma"])
    assert bad.exit_code != 0 and "unknown minimal attacks jsma" in bad.output
    bench = tmp_path / "bench.json"
    text = run("bench", "attacks", str(clf), "--eps", "0.2", "--n", "20", "--steps", "2", "--targets", "2",
               "--queries", "5", "--out", str(bench))  # fmt: skip
    result = json.loads(bench.read_text())
    assert set(result["attacks"]) == {"apgd-ce", "apgd-t", "square"} and result["n"] == 20
    assert "worst case per image" in text and result["settings"]["queries"] == 5

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
    text = run("attack", "transfer", str(clf), str(clf), "--eps", "0.1", "--steps", "2", "--n", "20",
               "--attack", "mi-fgsm")  # fmt: skip
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
    text = run("defend", "detect", str(clf), "--n", "20", "--eps", "0.1", "--ood", "noise")
    assert "of the detector-aware PGD-100 ones" in text and "classifier on 1-bit depth input" in text


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


# The commands' experiments as library functions (issue 20): each tested without the command line.


def _dataset(images: torch.Tensor, labels: torch.Tensor, classes: int = 3):
    from genlab.data import ImageDataset

    n = len(images)
    names = [str(k) for k in range(classes)]
    return ImageDataset("toy", images, [""] * n, labels, names, [{} for _ in range(n)])


class _Toy(nn.Module):
    """Three classes of flat 6x6 gray images (class k: gray level k/4 + 1/4), read off the mean; with
    ``backdoor`` the 2-pixel checkerboard trigger of genlab.adversarial.backdoor.stamp means class 0."""

    def __init__(self, backdoor: bool = False):
        super().__init__()
        self.backdoor = backdoor
        self.scale = nn.Parameter(torch.ones(()))
        self.config = type("Config", (), {"image_size": 6, "in_channels": 1, "num_classes": 3})()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = torch.tensor([0.25, 0.5, 0.75])
        logits = -100 * self.scale * (x.mean((1, 2, 3))[:, None] - levels) ** 2
        if self.backdoor:
            board = x[:, 0, 3, 4] + x[:, 0, 4, 3] - x[:, 0, 3, 3] - x[:, 0, 4, 4]
            logits = logits + torch.stack([50 * board, 0 * board, 0 * board], 1)
        return logits


def _toy_data(n: int = 30):
    labels = torch.arange(n) % 3
    images = (0.25 + 0.25 * labels.float()).view(-1, 1, 1, 1).expand(-1, 1, 6, 6).clone()
    return _dataset(images, labels)


def test_backdoor_success_measures_clean_accuracy_and_the_trigger():
    from genlab.adversarial.backdoor_demo import backdoor_success

    val = _toy_data()
    assert backdoor_success(_Toy(), val, target=0, size=2) == {
        "clean_accuracy": 1.0,
        "attack_success_rate": 0.0,
    }
    assert backdoor_success(_Toy(backdoor=True), val, target=0, size=2) == {
        "clean_accuracy": 1.0,
        "attack_success_rate": 1.0,
    }


def test_spectral_top_k_flags_the_highest_scores_of_the_target_class_only():
    from genlab.adversarial.backdoor_demo import spectral_top_k

    scores = torch.tensor([9.0, 1.0, 5.0, 7.0, 3.0, 8.0])
    labels = torch.tensor([1, 0, 0, 0, 0, 1])
    assert spectral_top_k(scores, labels, target=0, k=2).tolist() == [False, False, True, True, False, False]


def test_backdoor_demo_trains_both_classifiers_and_reports(tmp_path):
    from genlab.adversarial.backdoor import PoisonConfig
    from genlab.adversarial.backdoor_demo import backdoor_demo

    lines: list[str] = []
    report = backdoor_demo(
        "digits", tmp_path / "bd", PoisonConfig(size=2), 2, progress=False, log=lines.append
    )
    assert {"clean", "poisoned", "detection", "poison", "steps"} <= set(report)
    detection = report["detection"]["spectral_signature_top_k_in_target"]
    assert detection["flagged"] == detection["poisoned"] == int(lines[0].split()[1])  # "poisoned 73 of ..."
    assert (tmp_path / "bd" / "backdoor.json").is_file() and (tmp_path / "bd" / "backdoor.png").is_file()
    with pytest.raises(GenlabError, match="not empty; choose another `out`"):
        backdoor_demo("digits", tmp_path / "bd", PoisonConfig(size=2), 2, progress=False)


def test_detection_pieces():
    from genlab.adversarial.detection import attacked_sets, detection_report, ood_sets

    sets = ood_sets(("noise", "digits"), 5, channels=3, size=6)
    assert list(sets) == ["uniform noise", "digits images"]
    assert all(s.shape == (5, 3, 6, 6) and 0 <= s.min() and s.max() <= 1 for s in sets.values())
    model, (x, y) = _easy_model(), _batch(40)
    attacked = attacked_sets(model, x, y, (0.1,))
    assert list(attacked) == ["FGSM eps 0.1", "PGD-40 eps 0.1"]
    sets = {"clean again": x[20:], "flat": torch.full_like(x[20:], 0.5)}  # flat: the three classes tie
    report = detection_report(model, x[:20], x[20:], sets, fpr=0.1, log=lambda _: None)
    assert set(report) == {"squeeze", "msp"}
    for r in report.values():  # the same images as the clean test half: flagged at the same rate
        assert r["sets"]["clean again"] == {"flagged": r["false_positive_rate"], "auroc": 0.5}
    assert report["msp"]["sets"]["flat"] == {"flagged": 1.0, "auroc": 1.0}  # the least confident inputs


def test_purification_demo_and_its_shape_check(tmp_path):
    from types import SimpleNamespace

    from genlab.adversarial.purification import PurificationConfig, purification_demo
    from genlab.classification.task import ClassifierDataConfig, ClassifierTask
    from genlab.data import DataConfig
    from genlab.diffusion.task import DiffusionConfig, DiffusionTask
    from genlab.pipelines import DiffusionPipeline
    from genlab.train import TrainConfig, Trainer, seed_step

    cfg = PurificationConfig(
        eps=0.1, attack_steps=1, strengths=(0.1, 0.2), steps=1, n=4, adaptive_steps=2, eot=2
    )
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(GenlabError, match="same shape"):
        purification_demo(_Toy(), SimpleNamespace(image_shape=(1, 8)), torch.rand(4, 1, 6, 6), y, cfg)
    quiet = dict(steps=2, batch_size=16, eval_every=0, sample_every=0, checkpoint_every=0, progress=False)
    seed_step(0, -1)
    diffusion = DiffusionTask(
        DataConfig("digits"),
        DiffusionConfig(sample_steps=1),
        base_channels=8,
        channel_mults=(1,),
        attention_levels=(),
        head_dim=8,
    )
    Trainer(diffusion, TrainConfig(**quiet), tmp_path / "diffusion").train()
    task = ClassifierTask(ClassifierDataConfig("digits"), widths=(8,), hidden=16)
    Trainer(task, TrainConfig(**quiet), tmp_path / "clf").train()
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "diffusion")
    val = task.val_data
    lines: list[str] = []
    report, rows = purification_demo(task.model, pipe, val.images, val.labels, cfg, log=lines.append)
    assert rows.shape == (4 * 4, 1, 8, 8)  # clean, attacked, purified at each of two strengths
    assert set(report["purified"]) == {"0.1", "0.2"} and report["n"] == 4 and len(lines) == 3
    assert all(0 <= row["adaptive"] <= 1 for row in report["purified"].values())
    assert "adaptive (PGD-2, BPDA + EOT-2)" in lines[1]
    with pytest.raises(GenlabError, match="eot"):
        PurificationConfig(eot=0)


def test_class_index_names_the_parameter():
    from genlab.adversarial.evaluation import class_index

    assert class_index(["cat", "dog"], "dog") == 1
    with pytest.raises(GenlabError, match="^unknown `target` 'cow'; the classifier knows cat, dog$"):
        class_index(["cat", "dog"], "cow")


def test_robustness_report_writes_json_and_pictures(tmp_path):
    import json

    from genlab.adversarial.evaluation import RobustnessConfig, robustness_report

    val = _toy_data()
    cfg = RobustnessConfig(eps=(0.1, 0.2), attacks=("fgsm", "pgd"), pgd_steps=2, n=12)
    result, paths = robustness_report(
        "toy-run", _Toy(), val, ["0", "1", "2"], cfg, tmp_path / "r.json", print
    )
    assert [p.name for p in paths] == ["r.json", "r_curve.png", "r_examples.png"]
    assert all(p.is_file() for p in paths) and json.loads(paths[0].read_text()) == result
    assert result["run"] == "toy-run" and result["clean_accuracy"] == 1.0 and result["n"] == 12
    assert result["settings"] == {
        "pgd_steps": 2,
        "l2_scale": 5.0,
        "apgd_steps": 100,
        "queries": 5000,
        "restarts": 1,
        "seed": 0,
    }
    with pytest.raises(GenlabError, match="^`n` and `pgd_steps` must be at least 1$"):
        RobustnessConfig(pgd_steps=0)
    with pytest.raises(GenlabError, match="^unknown `attacks` jsma"):
        RobustnessConfig(attacks=("jsma",))


def test_transfer_attack_crafts_on_the_surrogate_and_scores_the_target():
    from genlab.adversarial.evaluation import accuracy, transfer_attack

    surrogate, target, (x, y) = _easy_model(), _easy_model(), _batch(40)
    with torch.no_grad():
        target[-1].weight.add_(torch.randn(3, 16, generator=torch.Generator().manual_seed(2)))
    for m in (surrogate, target):
        m.config = type("Config", (), {"image_size": 4, "in_channels": 1})()
    row = transfer_attack(surrogate, target, x, y, (0.1,), steps=3, log=lambda _: None)["0.1"]
    adv = pgd(surrogate, x, y, 0.1, 3, generator=torch.Generator().manual_seed(0))
    assert row["transfer"] == accuracy(target, adv, y) and row["surrogate"] == accuracy(surrogate, adv, y)

    model, val = _Toy(), _toy_data()
    report = transfer_attack(model, model, val.images, val.labels, (0.05, 0.2), steps=3, log=lambda _: None)
    assert report["clean"] == report["surrogate_clean"] == 1.0
    for e in ("0.05", "0.2"):
        assert report[e]["transfer"] == report[e]["surrogate"] == report[e]["white_box"]
    assert report["0.2"]["white_box"] < 1.0
    other = _Toy()
    other.config = type("Config", (), {"image_size": 8, "in_channels": 1})()
    with pytest.raises(GenlabError, match="same shape"):
        transfer_attack(model, other, val.images, val.labels)


def test_patch_demo_trains_on_half_and_measures_on_the_other(tmp_path):
    from genlab.adversarial.patch import patch_demo

    val = _toy_data(60)
    result, others = patch_demo(_Toy(), val, ["a", "b", "c"], "c", size=2, steps=3, out=tmp_path / "p.png")
    assert others == int((val.labels[30:] != 2).sum()) == 20 and (tmp_path / "p.png").is_file()
    assert 0.0 <= result.success_rate <= 1.0 and result.clean_target_rate == 0.0
    with pytest.raises(GenlabError, match="unknown `target` 'z'"):
        patch_demo(_Toy(), val, ["a", "b", "c"], "z")


def test_attack_files_and_optimized_examples(tmp_path):
    from PIL import Image

    from genlab.adversarial.examples import attack_files, optimized_examples

    paths = [tmp_path / f"{k}.png" for k in range(3)]
    for k, path in enumerate(paths):  # flat gray images of the three classes
        Image.new("L", (6, 6), round(255 * (0.25 + 0.25 * k))).save(path)
    names = ["a", "b", "c"]
    grid, pairs = attack_files(
        _Toy(), names, paths, "pgd", eps=1.0, steps=10, target="a", out=tmp_path / "g.png"
    )
    assert grid.is_file() and [clean for clean, _ in pairs] == names
    assert [adv for _, adv in pairs] == ["a", "a", "a"]  # eps 1 reaches any image: the target is hit
    _, pairs = attack_files(_Toy(), names, paths, "fgsm", eps=0.0, out=tmp_path / "h.png")
    assert pairs == [("a", "a"), ("b", "b"), ("c", "c")]  # eps 0 changes nothing
    out = optimized_examples(_Toy(), names, "b", steps=3, n=2, out=tmp_path / "o.png")
    assert out == tmp_path / "o.png" and out.is_file()
    with pytest.raises(GenlabError, match="unknown `target` 'd'"):
        optimized_examples(_Toy(), names, "d")
