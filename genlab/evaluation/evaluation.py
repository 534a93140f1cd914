"""Evaluate a generator: sample once, then score the samples with every metric asked for, one small
function per metric, composed by evaluate_generator.

Every number in the result names the features it was computed on and how many real and generated images
went into it, so two reports can be compared only when they share both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genlab.classification.evaluate import predict
from genlab.data import DataConfig, ImageDataset, load_splits, save_grid
from genlab.errors import GenlabError, param
from genlab.evaluation.accuracy import check_judge, class_accuracy, generate_samples
from genlab.evaluation.features import FeatureExtractor, reference_features, resolve_extractor
from genlab.metrics.coverage import mode_coverage, nearest_neighbours
from genlab.metrics.distances import fid_from_features, kernel_inception_distance
from genlab.metrics.plots import plot_histogram, plot_sweep
from genlab.metrics.precision_recall import precision_recall

METRICS = ("accuracy", "fid", "kid", "pr", "coverage", "memorization", "adherence", "clip")
TEXT_METRICS = {"adherence", "clip"}
FEATURE_METRICS = {"fid", "kid", "pr"}
JUDGED_METRICS = {"accuracy", "coverage"}


@dataclass
class EvalConfig:
    n: int = 500  # generated images (split evenly over the classes of a class model)
    steps: int = 20
    sampler: str = "dpmpp-2m"
    guidance_scale: float = 3.0
    seed: int = 0
    metrics: tuple[str, ...] = METRICS
    sweep_steps: tuple[int, ...] = ()  # FID at each step count, for every sampler in sweep_samplers
    sweep_samplers: tuple[str, ...] = ()
    batch_size: int = 100
    # the fidelity-diversity curves of guidance (genlab.evaluation.guidance): classifier-free guidance at
    # each of these scales, and the guide of EvalInputs (a noise-aware classifier or noised CLIP) at each
    # of guide_scales
    guidance_sweep: tuple[float, ...] = ()
    guide_scales: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown or not self.metrics:
            raise GenlabError(
                f"unknown `metrics` {', '.join(unknown) or '(none)'}; choose from {', '.join(METRICS)}"
            )
        if self.n < 2:
            raise GenlabError(f"`n` must be at least 2 to compare distributions (got {self.n})")
        if self.steps < 1 or any(s < 1 for s in self.sweep_steps):
            raise GenlabError("sampling steps must be at least 1")
        if any(not 0 <= s <= 1000 for s in (*self.guidance_sweep, *self.guide_scales)):
            raise GenlabError("guidance scales of the sweep must lie in [0, 1000]")


@dataclass
class EvalInputs:
    """What the samples are scored against and with; a metric whose input is missing cannot be asked for."""

    train: ImageDataset  # memorization, and the FID floor
    val: ImageDataset  # the real images the distribution metrics compare with
    extractor: FeatureExtractor | None = None  # features of FID, KID, precision/recall and the sweep
    judge: torch.nn.Module | None = None  # a classifier: accuracy and coverage
    prompts: list[str] | None = None  # text-to-image: one sample per prompt
    clip: torch.nn.Module | None = None  # a CLIP model: the CLIP score
    judge_name: str = "the classifier given"  # the judge's name in the report, unless the extractor's
    guide: torch.nn.Module | None = None  # a noise-aware classifier or a noised CLIP: guide_scales' guide
    paraphrases: list[str] | None = None  # the prompts' scenes in held-out phrasings, sampled beside them


class _CallCounter:
    """Counts forward calls of a module: the number of model evaluations (NFE) a sampler spends."""

    def __init__(self, module: torch.nn.Module):
        self.calls = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        self.calls += 1

    def per_batch(self, images: torch.Tensor, batch_size: int) -> int:
        """Model evaluations per batch of ``images``: what one image costs, however many share a batch."""
        return self.calls // max(1, -(-len(images) // batch_size))


def check_inputs(wanted: set[str], pipe: Any, inputs: EvalInputs) -> None:
    """A one-line error for the first metric of ``wanted`` that ``pipe`` and ``inputs`` cannot serve."""
    if wanted & TEXT_METRICS and inputs.prompts is None:
        raise GenlabError(f"{'/'.join(sorted(wanted & TEXT_METRICS))} apply to text-to-image runs only")
    if "clip" in wanted and inputs.clip is None:
        raise GenlabError(f"the CLIP score needs a CLIP run: pass {param('clip')}")
    if "accuracy" in wanted and not pipe.num_classes > 0:
        raise GenlabError(f"accuracy needs a class-conditional model (trained with {param('cond')} class)")
    if wanted & JUDGED_METRICS and inputs.judge is None:
        raise GenlabError(
            f"{'/'.join(sorted(wanted & JUDGED_METRICS))} need a classifier: pass {param('judge')}"
        )
    if wanted & FEATURE_METRICS and inputs.extractor is None:
        raise GenlabError(f"fid/kid/pr need a feature extractor: pass {param('extractor')}")
    if inputs.judge is not None:
        check_judge(pipe, inputs.judge)


def sample(
    pipe: Any, cfg: EvalConfig, steps: int, sampler: str, prompts: list[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The samples to score and their labels: ``cfg.n`` images (evenly over the classes of a class
    model), or one image per prompt and no labels; the same seeds at every ``steps`` and ``sampler``."""
    if prompts is None:
        return generate_samples(pipe, cfg.n, steps, sampler, cfg.guidance_scale, cfg.seed, cfg.batch_size)
    images = generate_from_prompts(
        pipe, prompts, steps, sampler, cfg.guidance_scale, cfg.seed, cfg.batch_size
    )
    return images, None


def fid_score(real: torch.Tensor, fake: torch.Tensor, floor: torch.Tensor | None = None) -> dict[str, float]:
    """FID (Heusel et al. 2017, eq. 6) of ``fake`` against ``real`` features; with ``floor``, the features
    of as many real training images, the FID of real data at this sample size beside it."""
    out = {"value": fid_from_features(real, fake)}
    if floor is not None:
        out["floor_real_train"] = fid_from_features(real, floor)
    return out


def kid_score(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    """KID (Binkowski et al. 2018): the mean and spread over 100 subsets of half the smaller sample (at
    most 1000, their size), so that the subsets differ and their spread says how far to trust the mean."""
    subset = max(2, min(len(real), len(fake), 2000) // 2)
    mean, std = kernel_inception_distance(real, fake, subset_size=subset)
    return {"value": mean, "std": std, "subset_size": subset}


def feature_scores(
    real: torch.Tensor, fake: torch.Tensor, floor: torch.Tensor | None, wanted: set[str], name: str
) -> dict[str, Any]:
    """FID, KID and precision/recall (Kynkaanniemi et al. 2019, k=3), those of ``wanted``, each naming the
    features ``name`` it was computed on and its image counts."""
    sizes = {"real": len(real), "generated": len(fake), "features": name}
    out: dict[str, Any] = {}
    if "fid" in wanted:
        fid = fid_score(real, fake, floor)
        out["fid"] = {"value": fid.pop("value"), **sizes, **fid}
    if "kid" in wanted:
        out["kid"] = {**kid_score(real, fake), **sizes}
    if "pr" in wanted:
        out["pr"] = {**precision_recall(real, fake), **sizes}
    return out


def floor_features(extractor: FeatureExtractor, train: ImageDataset, n: int) -> torch.Tensor:
    """Features of ``n`` real training images (a fixed random subset): the samples of the FID floor."""
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n]
    return reference_features(extractor, train)[pick]


def accuracy_score(
    predicted: torch.Tensor, labels: torch.Tensor, names: list[str], judge: str
) -> dict[str, Any]:
    """How often the judge's ``predicted`` classes are the classes asked for, overall and per class."""
    acc = class_accuracy(predicted, labels, len(names))
    return {
        "value": acc["accuracy"],
        "per_class": dict(zip(names, acc["per_class_accuracy"], strict=True)),
        "generated": len(predicted),
        "judge": judge,
    }


def coverage_score(
    predicted: torch.Tensor, names: list[str], judge: str, path: str | Path
) -> tuple[dict[str, Any], str]:
    """Mode coverage of the judge's ``predicted`` classes (of ``names``), and the file name of its
    histogram, drawn to ``path``."""
    cover = mode_coverage(predicted, len(names))
    title = f"predicted classes of {len(predicted)} samples"
    picture = plot_histogram(cover["histogram"], names, path, title).name
    return {**cover, "classes": names, "judge": judge}, picture


def memorization(images: torch.Tensor, train: ImageDataset, val: ImageDataset, path: Path) -> dict:
    """Each sample's nearest training image in pixel space, beside what held-out real images get; a panel
    of the closest pairs goes to ``path``."""
    samples_nn = nearest_neighbours(images, train.images)
    held_out_nn = nearest_neighbours(val.images, train.images)  # what "new, not copied" looks like
    d = samples_nn["distances"]
    order = d.argsort()[:8]
    pairs = torch.stack([torch.stack([images[i], train.images[samples_nn["indices"][i]]]) for i in order])
    captions = [c for i in order for c in (f"sample d={float(d[i]):.2f}", "nearest training")]
    panel = save_grid(path, pairs.flatten(0, 1), captions, nrow=4)
    return {
        "median_distance": float(d.median()),
        "min_distance": float(d.min()),
        "held_out_median_distance": float(held_out_nn["distances"].median()),
        "pixels": "L2 over pixels in [0, 1]",
        "panel": str(panel),
        "generated": len(images),
        "training": len(train),
    }


def sampler_sweep(
    pipe: Any,
    cfg: EvalConfig,
    inputs: EvalInputs,
    real: torch.Tensor,
    counter: _CallCounter,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """FID against the ``real`` features (and the judge's accuracy for a class model) at every step count
    of ``cfg.sweep_steps`` for every sampler of ``cfg.sweep_samplers``, with the model evaluations per
    image and the seconds each point costs."""
    rows = []
    for sampler in cfg.sweep_samplers or (cfg.sampler,):
        for steps in cfg.sweep_steps:
            counter.calls = 0
            t0 = time.perf_counter()
            x, y = sample(pipe, cfg, steps, sampler, inputs.prompts)
            row = {
                "sampler": sampler,
                "steps": steps,
                "nfe": counter.per_batch(x, cfg.batch_size),
                "seconds": time.perf_counter() - t0,
                "fid": fid_from_features(real, inputs.extractor(x)),
            }
            if inputs.judge is not None and y is not None:
                predicted = predict(inputs.judge, x).argmax(1)
                row["accuracy"] = class_accuracy(predicted, y, pipe.num_classes)["accuracy"]
            rows.append(row)
            log(
                f"  sweep {sampler:>9} {steps:>3} steps: FID {row['fid']:.2f}"
                + (f", accuracy {row['accuracy']:.1%}" if "accuracy" in row else "")
            )
    return rows


def evaluate_generator(
    pipe: Any,
    cfg: EvalConfig,
    inputs: EvalInputs,
    out_dir: str | Path = ".",
    prefix: str = "eval",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Sample ``cfg.n`` images from ``pipe`` (one per prompt of ``inputs.prompts`` for a text-to-image
    pipeline) and score them with every metric of ``cfg.metrics`` against the real ``inputs.val`` split.

    FID, KID and precision/recall use ``inputs.extractor``'s features; accuracy and coverage the
    predictions of ``inputs.judge``; memorization compares pixels with ``inputs.train``. The FID floor is
    the FID of as many real training images as samples: no generator can expect to beat it with this many
    images. Pictures (samples, coverage histogram, memorization panel, sweep plot) go to
    ``out_dir/{prefix}_*.png``. With prompts, ``adherence`` reads each sample's scene back from its pixels
    (``shapes`` data) and ``clip`` is the CLIP score of image and prompt under ``inputs.clip``.
    """
    wanted = set(cfg.metrics)
    check_inputs(wanted, pipe, inputs)
    out_dir, extractor, judge, prompts = Path(out_dir), inputs.extractor, inputs.judge, inputs.prompts
    names = pipe.class_names or [str(i) for i in range(pipe.num_classes)]
    counter = _CallCounter(pipe.network)
    t0 = time.perf_counter()
    images, labels = sample(pipe, cfg, cfg.steps, cfg.sampler, prompts)
    report: dict[str, Any] = {
        "n": len(images),
        "sampler": cfg.sampler,
        "steps": cfg.steps,
        "guidance_scale": cfg.guidance_scale,
        "seed": cfg.seed,
        "nfe": counter.per_batch(images, cfg.batch_size),
        "sampling_seconds": time.perf_counter() - t0,
        "pictures": {},
    }
    if extractor is not None:
        report["features"] = extractor.name
    pictures = report["pictures"]

    predicted = None
    if judge is not None:
        predicted = predict(judge, images).argmax(1)
        verdict = _judge_name(inputs)
        if "accuracy" in wanted:
            report["accuracy"] = accuracy_score(predicted, labels, names, verdict)
        if "coverage" in wanted:
            path = out_dir / f"{prefix}_coverage.png"
            report["coverage"], pictures["coverage"] = coverage_score(
                predicted, _classes(judge), verdict, path
            )

    grid = out_dir / f"{prefix}_samples.png"
    if prompts is not None:
        pictures["samples"] = save_grid(grid, images[:64], prompts[:64], nrow=8).name
        report["prompts"] = list(prompts)
        if "adherence" in wanted:
            from genlab.metrics.adherence import prompt_adherence

            report["adherence"] = prompt_adherence(images, prompts)
            if inputs.paraphrases is not None:
                grid = out_dir / f"{prefix}_paraphrases.png"
                report.update(_paraphrased(pipe, cfg, inputs.paraphrases, grid))
                pictures["paraphrases"] = report.pop("picture")
        if "clip" in wanted:
            from genlab.metrics.clip_score import clip_score

            report["clip"] = clip_score(inputs.clip, images, prompts)
    else:
        pictures["samples"] = _sample_grid(images, labels, predicted, names, judge, grid)

    if wanted & FEATURE_METRICS or cfg.sweep_steps:
        real = reference_features(extractor, inputs.val)
        floor = floor_features(extractor, inputs.train, len(images)) if "fid" in wanted else None
        report.update(feature_scores(real, extractor(images), floor, wanted, extractor.name))

    if "memorization" in wanted:
        path = out_dir / f"{prefix}_memorization.png"
        report["memorization"] = memorization(images, inputs.train, inputs.val, path)
        pictures["memorization"] = Path(report["memorization"]["panel"]).name

    if cfg.guidance_sweep or cfg.guide_scales:
        from genlab.evaluation.guidance import guidance_sweep
        from genlab.metrics.plots import plot_guidance

        real = reference_features(extractor, inputs.val) if extractor is not None else None
        report["guidance"] = guidance_sweep(pipe, cfg, inputs, real, log)
        pictures["guidance"] = plot_guidance(report["guidance"], out_dir / f"{prefix}_guidance.png").name

    if cfg.sweep_steps:
        report["sweep"] = sampler_sweep(pipe, cfg, inputs, real, counter, log)
        floor = report.get("fid", {}).get("floor_real_train")
        pictures["sweep"] = plot_sweep(report["sweep"], out_dir / f"{prefix}_sweep.png", floor=floor).name
    counter.handle.remove()
    return report


def _paraphrased(pipe: Any, cfg: EvalConfig, paraphrases: list[str], grid: Path) -> dict[str, Any]:
    """Adherence of samples for the held-out ``paraphrases`` of the prompts, drawn from the same seeds as
    the prompts' samples, so that only the wording differs; their grid goes to ``grid``."""
    from genlab.metrics.adherence import prompt_adherence

    images, _ = sample(pipe, cfg, cfg.steps, cfg.sampler, paraphrases)
    return {
        "paraphrases": list(paraphrases),
        "adherence_paraphrase": prompt_adherence(images, paraphrases),
        "picture": save_grid(grid, images[:64], paraphrases[:64], nrow=8).name,
    }


@torch.no_grad()
def generate_from_prompts(
    pipe: Any,
    prompts: list[str],
    steps: int = 20,
    sampler: str = "dpmpp-2m",
    guidance_scale: float = 3.0,
    seed: int = 0,
    batch_size: int = 100,
    **pipe_kwargs: Any,
) -> torch.Tensor:
    """One image per prompt from a text-to-image pipeline, batch by batch, deterministic in ``seed``;
    ``pipe_kwargs`` go to every call of the pipeline (e.g. the guide)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.cat(
        [
            pipe(
                prompts[i : i + batch_size], None, steps, guidance_scale, sampler, generator, 1, **pipe_kwargs
            ).tensors
            for i in range(0, len(prompts), batch_size)
        ]
    )


def _classes(judge: torch.nn.Module) -> list[str]:
    return list(judge.config.class_names) or [str(i) for i in range(judge.config.num_classes)]


def _judge_name(inputs: EvalInputs) -> str:
    extractor = inputs.extractor
    if extractor is not None and extractor.classifier is inputs.judge:
        return extractor.name.replace(", penultimate layer", "").split(" (")[0]
    return inputs.judge_name


def _sample_grid(images, labels, predicted, names, judge, path: Path) -> str:
    """Up to 8 samples per asked class (or 64 samples), captioned 'asked -> judged' when both are known."""
    if labels is not None:
        per = int((labels == labels[0]).sum())
        show = min(per, 8)
        pick = [c * per + i for c in range(len(names)) for i in range(show)]
    else:
        show, pick = 8, list(range(min(64, len(images))))
    captions = None
    if predicted is not None:
        judged = _classes(judge)
        captions = [
            (f"{names[int(labels[i])]} -> " if labels is not None else "") + judged[int(predicted[i])]
            for i in pick
        ]
    return save_grid(path, images[pick], captions, nrow=show).name


def real_data_floor(
    train: ImageDataset, val: ImageDataset, extractor: FeatureExtractor, n: int, seed: int = 0
) -> dict[str, Any]:
    """FID, KID and precision/recall of ``n`` real training images against the validation split: the
    score of a perfect generator at this sample size, the floor to read every other number against."""
    if not 2 <= n <= len(train):
        raise GenlabError(f"`n` must be between 2 and the {len(train)} training images (got {n})")
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    real = reference_features(extractor, val)
    fake = reference_features(extractor, train)[pick]
    return {"n": n, **feature_scores(real, fake, None, FEATURE_METRICS, extractor.name)}


def dataset_floor(
    data: DataConfig, n: int = 500, features: str = "auto", log: Callable[[str], None] = print
) -> dict[str, Any]:
    """real_data_floor of the data set ``data`` on the ``features`` of resolve_extractor (auto, inception
    or a classifier run): what a perfect generator scores with ``n`` samples."""
    train, val = load_splits(data.name, data.split_seed, data.val_fraction, data.image_size)
    return real_data_floor(train, val, resolve_extractor(features, data, log=log), n)
