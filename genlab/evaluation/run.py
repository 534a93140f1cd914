"""`genlab eval` as functions: what the evaluation of a generator's run measures by default, which features
and which classifier read its samples, the prompts of a text-to-image run, and the report (JSON and HTML)
written beside the run. The scoring itself is genlab.evaluation.evaluation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from genlab import rundir
from genlab.data import DataConfig, ImageDataset, load_splits
from genlab.errors import GenlabError, param
from genlab.evaluation.evaluation import (
    FEATURE_METRICS,
    JUDGED_METRICS,
    EvalConfig,
    EvalInputs,
    evaluate_generator,
)
from genlab.evaluation.features import FeatureExtractor, classifier_extractor, resolve_extractor

# What a run's evaluation measures unless asked otherwise (accuracy only for class-conditional runs)
DEFAULT_METRICS = ("accuracy", "fid", "kid", "pr", "coverage", "memorization")
TEXT_DEFAULT_METRICS = ("adherence", "fid", "kid", "pr", "memorization")  # and clip, given a CLIP model


@dataclass
class RunInfo:
    """What a generator run's config.json says about evaluating it."""

    run: str
    gan: bool  # one generator pass per image: no steps, sampler or guidance
    text: bool  # text-to-image: sampled from prompts
    conditional: bool  # class-conditional
    data: DataConfig  # the data it was trained on: the real images its samples are compared with
    class_names: list[str] | None = None


def read_run(run: str) -> RunInfo:
    """The RunInfo of a diffusion or GAN run (a one-line error for any other)."""
    from genlab.nn.pretrained import config_from_dict

    config = rundir.read_config(run)
    gan = config.get("kind") == "gan"
    if not gan:
        config = rundir.read_config(run, kind="diffusion")
    cond = config.get("diffusion", {}).get("cond")
    conditional = cond == "class" or config.get("model", {}).get("num_classes", 0) > 0
    data = config_from_dict(DataConfig, rundir.read_config(run).get("data", {}), f"{run}/config.json")
    return RunInfo(str(run), gan, cond == "text", conditional, data, config.get("class_names"))


def default_metrics(info: RunInfo, clip: bool = False) -> tuple[str, ...]:
    """The metrics of ``info``'s run: prompt adherence (and the CLIP score with a CLIP model) for a
    text-to-image run, accuracy for a class-conditional one, the distribution metrics for all."""
    if info.text:
        return TEXT_DEFAULT_METRICS + (("clip",) if clip else ())
    return DEFAULT_METRICS if info.conditional else tuple(m for m in DEFAULT_METRICS if m != "accuracy")


def run_eval_config(
    info: RunInfo, metrics: tuple[str, ...] | None = None, clip: bool = False, **fields: Any
) -> EvalConfig:
    """The EvalConfig of ``info``'s run from EvalConfig's ``fields``: ``metrics`` by default those of
    default_metrics; a GAN samples in one generator pass (steps, sampler and guidance do not apply)."""
    if metrics is None:
        metrics = default_metrics(info, clip)
    if info.gan:
        if fields.get("sweep_steps"):
            raise GenlabError(
                f"{param('sweep_steps')} applies to diffusion runs; a GAN makes an image in one pass"
            )
        fields.update(steps=1, sampler="generator", guidance_scale=1.0)
    return EvalConfig(metrics=tuple(metrics), **fields)


def choose_extractors(
    cfg: EvalConfig,
    data: DataConfig,
    classifier: str | None = None,
    features: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    text: bool = False,
) -> tuple[FeatureExtractor | None, nn.Module | None, FeatureExtractor | None]:
    """(the feature extractor, the judge, the extractor of the ``classifier`` run), each built only when
    a metric of ``cfg`` needs it (a guidance sweep needs features, and a judge unless the run is a
    ``text`` one, whose samples are read back from the pixels). The features are ``features`` (auto,
    inception or a classifier run), by default the ``classifier`` run's or, without one, the data's own
    classifier (auto); the judge of accuracy and coverage is the ``classifier`` run, else the
    extractor's classifier, else auto's."""
    judge_extractor = classifier_extractor(classifier) if classifier else None
    extractor = None
    sweeps = cfg.sweep_steps or cfg.guidance_sweep or cfg.guide_scales
    if set(cfg.metrics) & FEATURE_METRICS or sweeps:
        spec = features or (classifier if classifier else "auto")
        extractor = (
            judge_extractor
            if spec == classifier
            else resolve_extractor(spec, data, progress=progress, log=log)
        )
    judge = None
    if set(cfg.metrics) & JUDGED_METRICS or (cfg.guidance_sweep or cfg.guide_scales) and not text:
        source = judge_extractor or extractor or resolve_extractor("auto", data, log=log)
        judge = source.classifier
        if judge is None:
            raise GenlabError(f"accuracy/coverage need a classifier: pass {param('classifier')}")
    return extractor, judge, judge_extractor


def eval_prompts(prompts: str, val: ImageDataset, n: int) -> list[str]:
    """``n`` prompts: ``val``'s captions spread over the split (``single``, and ``paraphrase``, which adds
    their held-out phrasings elsewhere: the single-object ones only, as far as the dataset can tell), or
    the lines of the file ``prompts``, cycled."""
    if prompts in ("val", "single", "paraphrase"):
        captions = val.captions
        if prompts != "val":
            from genlab.metrics.adherence import single_object_prompts

            captions = single_object_prompts(captions)
            if not captions:
                raise GenlabError(
                    f"{param('prompts')} {prompts}: this dataset has no single-object captions (shapes has)"
                )
    else:
        path = Path(prompts)
        if not path.is_file():
            raise GenlabError(
                f"{param('prompts')} {prompts!r} is neither 'val', 'single', 'paraphrase' "
                "nor a file of prompts"
            )
        captions = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not captions:
            raise GenlabError(f"{param('prompts')} file {prompts} has no prompts (one per line)")
    if len(captions) >= n:
        idx = [round(i * (len(captions) - 1) / max(1, n - 1)) for i in range(n)]
        return [captions[i] for i in idx]
    return [captions[i % len(captions)] for i in range(n)]


@dataclass
class RunEvalOptions:
    """Where a run's evaluation reads its samples with and writes its report."""

    classifier: str | None = None  # a classifier run: the judge (and the features unless `features`)
    features: str | None = None  # auto, inception or a classifier run (see choose_extractors)
    prompts: str = "val"  # text-to-image: val, single, paraphrase or a file of prompts (see eval_prompts)
    out: str | None = None  # the JSON report (default RUN/eval.json); pictures and HTML beside it
    precision: str = "auto"  # what the pipeline was loaded with, recorded in the report
    progress: bool = True  # a progress bar while an extractor trains
    judge_name: str = "the classifier given"  # the report's name of a judge that is not the extractor


def evaluate_run(
    info: RunInfo,
    pipe: Any,
    cfg: EvalConfig,
    options: RunEvalOptions,
    clip: nn.Module | None = None,
    training_plot: Callable[..., Path | None] | None = None,
    log: Callable[[str], None] = print,
    guide: nn.Module | None = None,
) -> tuple[dict[str, Any], Path, Path]:
    """Evaluate the generator ``pipe`` of ``info``'s run (evaluate_generator against the run's own data)
    and write the report: JSON at ``options.out``, its HTML page and pictures beside it, with the run's
    training diagnostics drawn by ``training_plot(records, path, class_names)`` (a diffusion run's
    plot_diffusion_training, a GAN's plot_gan_training). Returns (report, JSON path, HTML path)."""
    from genlab.metrics.html import write_report
    from genlab.nn.precision import resolve_precision

    data = info.data
    train, val = load_splits(data.name, data.split_seed, data.val_fraction, data.image_size)
    extractor, judge, judge_extractor = choose_extractors(
        cfg, data, options.classifier, options.features, options.progress, log, text=info.text
    )
    out = Path(options.out) if options.out else Path(info.run) / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    prompts = eval_prompts(options.prompts, val, cfg.n) if info.text else None
    how = (
        "one generator pass"
        if info.gan
        else f"{cfg.sampler}, {cfg.steps} steps, guidance {cfg.guidance_scale}"
    )
    log(f"sampling {cfg.n} images ({how}, seed {cfg.seed})")
    inputs = EvalInputs(train, val, extractor, judge, prompts, clip, options.judge_name, guide)
    if options.prompts == "paraphrase" and prompts is not None:
        from genlab.metrics.adherence import paraphrase_prompts

        inputs.paraphrases = paraphrase_prompts(prompts)
        log(f"and the same {len(prompts)} scenes in held-out phrasings (e.g. {inputs.paraphrases[0]!r})")
    report = {
        "run": info.run,
        "data": data.name,
        **evaluate_generator(pipe, cfg, inputs, out.parent, out.stem, log),
    }
    if not info.gan:  # the forward passes' precision, "auto" resolved for the device sampled on
        report["precision"] = resolve_precision(options.precision, next(pipe.network.parameters()).device)
    if judge_extractor is not None:
        report["classifier"] = str(options.classifier)
        report["classifier_val_acc"] = judge_extractor.val_accuracy
    if training_plot is not None:
        path = out.parent / f"{out.stem}_training.png"
        curve = training_plot(rundir.read_metrics(info.run), path, info.class_names)
        if curve is not None:
            report["pictures"]["training"] = curve.name
    rundir.atomic_write_json(out, report)
    page = write_report(out.with_suffix(".html"), report, f"genlab evaluation of {info.run}")
    return report, out, page
