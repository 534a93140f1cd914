"""Evaluate a generator: sample once, then score the samples with every metric asked for.

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
from genlab.data import ImageDataset, save_grid
from genlab.errors import GenlabError
from genlab.evaluation.accuracy import check_judge, class_accuracy, generate_samples
from genlab.evaluation.features import FeatureExtractor, reference_features
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

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown or not self.metrics:
            raise GenlabError(
                f"unknown --metrics {', '.join(unknown) or '(none)'}; choose from {', '.join(METRICS)}"
            )
        if self.n < 2:
            raise GenlabError(f"--n must be at least 2 to compare distributions (got {self.n})")
        if self.steps < 1 or any(s < 1 for s in self.sweep_steps):
            raise GenlabError("sampling steps must be at least 1")


class _CallCounter:
    """Counts forward calls of a module: the number of model evaluations (NFE) a sampler spends."""

    def __init__(self, module: torch.nn.Module):
        self.calls = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        self.calls += 1


def _scores(real: torch.Tensor, fake: torch.Tensor, floor: torch.Tensor | None, wanted: set[str], name: str):
    sizes = {"real": len(real), "generated": len(fake), "features": name}
    out: dict[str, Any] = {}
    if "fid" in wanted:
        out["fid"] = {"value": fid_from_features(real, fake), **sizes}
        if floor is not None:
            out["fid"]["floor_real_train"] = fid_from_features(real, floor)
    if "kid" in wanted:
        # Subsets of half the smaller sample (at most 1000, Binkowski et al.'s size), so that the 100
        # subsets differ and their spread says how far to trust the mean.
        subset = max(2, min(len(real), len(fake), 2000) // 2)
        mean, std = kernel_inception_distance(real, fake, subset_size=subset)
        out["kid"] = {"value": mean, "std": std, "subset_size": subset, **sizes}
    if "pr" in wanted:
        out["pr"] = {**precision_recall(real, fake), **sizes}
    return out


def evaluate_generator(
    pipe: Any,
    train: ImageDataset,
    val: ImageDataset,
    extractor: FeatureExtractor | None,
    judge: torch.nn.Module | None,
    cfg: EvalConfig,
    out_dir: str | Path,
    prefix: str = "eval",
    log: Callable[[str], None] = print,
    prompts: list[str] | None = None,
    clip: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Sample ``cfg.n`` images from ``pipe`` (one per prompt of ``prompts`` for a text-to-image pipeline)
    and score them against the real ``val`` split.

    FID, KID and precision/recall use ``extractor``'s features; accuracy and coverage use ``judge``'s
    predictions; memorization compares pixels with ``train``. The FID floor is the FID of as many real
    training images as samples: no generator can expect to beat it with this many images. Pictures
    (samples, coverage histogram, memorization panel, sweep plot) go to ``out_dir/{prefix}_*.png``.
    With prompts, ``adherence`` reads each sample's scene back from its pixels (``shapes`` data) and
    ``clip`` is the CLIP score of image and prompt under the CLIP run ``clip``.
    """
    wanted = set(cfg.metrics)
    if wanted & TEXT_METRICS and prompts is None:
        raise GenlabError(f"{'/'.join(sorted(wanted & TEXT_METRICS))} apply to text-to-image runs only")
    if "clip" in wanted and clip is None:
        raise GenlabError("the CLIP score needs a CLIP run: pass --clip RUN")
    class_model = pipe.num_classes > 0
    if "accuracy" in wanted and not class_model:
        raise GenlabError("accuracy needs a class-conditional model (trained with --cond class)")
    if wanted & JUDGED_METRICS and judge is None:
        raise GenlabError(
            f"{'/'.join(sorted(wanted & JUDGED_METRICS))} need a classifier: pass --classifier RUN"
        )
    if wanted & FEATURE_METRICS and extractor is None:
        raise GenlabError("fid/kid/pr need a feature extractor: pass --features")
    if judge is not None:
        check_judge(pipe, judge)
    out_dir = Path(out_dir)
    names = pipe.class_names or [str(i) for i in range(pipe.num_classes)]
    settings = {
        "sampler": cfg.sampler,
        "steps": cfg.steps,
        "guidance_scale": cfg.guidance_scale,
        "seed": cfg.seed,
    }

    def make(steps: int, sampler: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        if prompts is None:
            return generate_samples(pipe, cfg.n, steps, sampler, cfg.guidance_scale, cfg.seed, cfg.batch_size)
        return generate_from_prompts(
            pipe, prompts, steps, sampler, cfg.guidance_scale, cfg.seed, cfg.batch_size
        ), None

    counter = _CallCounter(pipe.network)
    t0 = time.perf_counter()
    images, labels = make(cfg.steps, cfg.sampler)
    seconds = time.perf_counter() - t0
    batches = -(-len(images) // cfg.batch_size)
    report: dict[str, Any] = {
        "n": len(images),
        **settings,
        "nfe": counter.calls // max(1, batches),
        "sampling_seconds": seconds,
        "pictures": {},
    }
    if extractor is not None:
        report["features"] = extractor.name
    pictures = report["pictures"]

    predicted = None
    if judge is not None:
        predicted = predict(judge, images).argmax(1)
        judge_names = list(judge.config.class_names) or [str(i) for i in range(judge.config.num_classes)]
        if "accuracy" in wanted:
            acc = class_accuracy(predicted, labels, pipe.num_classes)
            report["accuracy"] = {
                "value": acc["accuracy"],
                "per_class": dict(zip(names, acc["per_class_accuracy"], strict=True)),
                "generated": len(images),
                "judge": _judge_name(judge, extractor),
            }
        if "coverage" in wanted:
            cover = mode_coverage(predicted, judge.config.num_classes)
            report["coverage"] = {**cover, "classes": judge_names, "judge": _judge_name(judge, extractor)}
            pictures["coverage"] = plot_histogram(
                cover["histogram"],
                judge_names,
                out_dir / f"{prefix}_coverage.png",
                f"predicted classes of {len(images)} samples",
            ).name

    grid = out_dir / f"{prefix}_samples.png"
    if prompts is not None:
        pictures["samples"] = save_grid(grid, images[:64], prompts[:64], nrow=8).name
        report["prompts"] = list(prompts)
        if "adherence" in wanted:
            from genlab.metrics.adherence import prompt_adherence

            report["adherence"] = prompt_adherence(images, prompts)
        if "clip" in wanted:
            from genlab.metrics.clip_score import clip_score

            report["clip"] = clip_score(clip, images, prompts)
    else:
        pictures["samples"] = _sample_grid(images, labels, predicted, names, judge, grid)

    real = floor = None
    if wanted & FEATURE_METRICS or cfg.sweep_steps:
        real = reference_features(extractor, val)
        if "fid" in wanted:
            pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[: len(images)]
            floor = reference_features(extractor, train)[pick]
        report.update(_scores(real, extractor(images), floor, wanted, extractor.name))

    if "memorization" in wanted:
        report["memorization"] = _memorization(images, train, val, out_dir / f"{prefix}_memorization.png")
        pictures["memorization"] = Path(report["memorization"]["panel"]).name

    if cfg.sweep_steps:
        samplers = cfg.sweep_samplers or (cfg.sampler,)
        report["sweep"] = []
        for sampler in samplers:
            for steps in cfg.sweep_steps:
                counter.calls = 0
                t0 = time.perf_counter()
                x, y = make(steps, sampler)
                row = {
                    "sampler": sampler,
                    "steps": steps,
                    "nfe": counter.calls // max(1, -(-len(x) // cfg.batch_size)),
                    "seconds": time.perf_counter() - t0,
                    "fid": fid_from_features(real, extractor(x)),
                }
                if judge is not None and y is not None:
                    row["accuracy"] = class_accuracy(predict(judge, x).argmax(1), y, pipe.num_classes)[
                        "accuracy"
                    ]
                report["sweep"].append(row)
                log(
                    f"  sweep {sampler:>9} {steps:>3} steps: FID {row['fid']:.2f}"
                    + (f", accuracy {row['accuracy']:.1%}" if "accuracy" in row else "")
                )
        floor = report.get("fid", {}).get("floor_real_train")
        pictures["sweep"] = plot_sweep(report["sweep"], out_dir / f"{prefix}_sweep.png", floor=floor).name
    counter.handle.remove()
    return report


@torch.no_grad()
def generate_from_prompts(
    pipe: Any,
    prompts: list[str],
    steps: int = 20,
    sampler: str = "dpmpp-2m",
    guidance_scale: float = 3.0,
    seed: int = 0,
    batch_size: int = 100,
) -> torch.Tensor:
    """One image per prompt from a text-to-image pipeline, batch by batch, deterministic in ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.cat(
        [
            pipe(prompts[i : i + batch_size], None, steps, guidance_scale, sampler, generator, 1).tensors
            for i in range(0, len(prompts), batch_size)
        ]
    )


def _judge_name(judge: torch.nn.Module, extractor: FeatureExtractor | None) -> str:
    if extractor is not None and extractor.classifier is judge:
        return extractor.name.replace(", penultimate layer", "").split(" (")[0]
    return "the classifier given with --classifier"


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
        judged = list(judge.config.class_names) or [str(i) for i in range(judge.config.num_classes)]
        captions = [
            (f"{names[int(labels[i])]} -> " if labels is not None else "") + judged[int(predicted[i])]
            for i in pick
        ]
    return save_grid(path, images[pick], captions, nrow=show).name


def _memorization(images: torch.Tensor, train: ImageDataset, val: ImageDataset, path: Path) -> dict:
    """Each sample's nearest training image in pixel space, beside what held-out real images get."""
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


def real_data_floor(
    train: ImageDataset, val: ImageDataset, extractor: FeatureExtractor, n: int, seed: int = 0
) -> dict[str, Any]:
    """FID, KID and precision/recall of ``n`` real training images against the validation split: the
    score of a perfect generator at this sample size, the floor to read every other number against."""
    if not 2 <= n <= len(train):
        raise GenlabError(f"--n must be between 2 and the {len(train)} training images (got {n})")
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    real = reference_features(extractor, val)
    fake = reference_features(extractor, train)[pick]
    return {"n": n, **_scores(real, fake, None, FEATURE_METRICS, extractor.name)}
