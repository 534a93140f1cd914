"""`genlab eval`: measure what a trained generator makes."""

from __future__ import annotations

from pathlib import Path

import click

from genlab.cli import cli
from genlab.cli.common import sampling_options

METRICS = ("accuracy", "fid", "kid", "pr", "coverage", "memorization")


@cli.command("eval")
@click.argument("run", type=click.Path())
@click.option(
    "--classifier", required=True, type=click.Path(), help="A classifier run that judges the samples."
)
@click.option(
    "--n", default=500, show_default=True, type=int, help="Samples in all (split evenly over classes)."
)
@sampling_options
@click.option(
    "--metrics",
    default=",".join(METRICS),
    show_default=True,
    help="Comma-separated subset (fid, kid, pr on the classifier's penultimate features).",
)
@click.option("--out", default=None, help="JSON to write (default: RUN/eval.json).")
@click.option("--device", default="auto", show_default=True)
def eval_cmd(
    run: str,
    classifier: str,
    n: int,
    steps: int,
    sampler: str,
    guidance: float,
    seed: int,
    metrics: str,
    out: str | None,
    device: str,
) -> None:
    """Judge class-conditional samples with a classifier: how often the asked class is drawn (accuracy),
    and how far the samples' features lie from the real validation images' (FID, KID).

    FID and KID use the classifier's penultimate features (its `features()`), so they compare runs judged
    by the same classifier, not numbers from papers (which use Inception features). Writes RUN/eval.json
    and RUN/eval_samples.png (samples captioned 'asked -> judged').

    \b
    Example:
      genlab eval runs/diffusion-mnist --classifier runs/classifier-mnist --n 500 --steps 20
    """
    import time

    from genlab import rundir
    from genlab.data import save_grid
    from genlab.errors import GenlabError
    from genlab.metrics import conditional_accuracy
    from genlab.nn import Classifier
    from genlab.pipelines import DiffusionPipeline

    wanted = [m.strip() for m in metrics.split(",") if m.strip()]
    unknown = sorted(set(wanted) - set(METRICS))
    if unknown or not wanted:
        raise GenlabError(
            f"unknown --metrics {', '.join(unknown) or '(none)'}; choose from {', '.join(METRICS)}"
        )
    pipe = DiffusionPipeline.from_pretrained(run, device=device)
    judge = Classifier.from_pretrained(classifier)
    per_class = max(1, n // max(1, pipe.num_classes))
    t0 = time.perf_counter()
    result = conditional_accuracy(pipe, judge, per_class, steps, sampler, guidance, seed)
    seconds = time.perf_counter() - t0
    names = pipe.class_names or [str(i) for i in range(pipe.num_classes)]
    judged = [r for r in rundir.read_metrics(classifier) if r.get("event") == "eval" and "val_acc" in r]
    report = {
        "metric": "classifier accuracy of class-conditional samples",
        "accuracy": result["accuracy"],
        "per_class_accuracy": dict(zip(names, result["per_class_accuracy"], strict=True)),
        "predicted_histogram": dict(zip(names, result["predicted_histogram"], strict=True)),
        "n": result["n"],
        "classifier": str(classifier),
        "classifier_val_acc": judged[-1]["val_acc"] if judged else None,
        "run": str(run),
        "seconds": seconds,
        **result["settings"],
    }
    report.update(_extra_metrics(run, judge, result, wanted, pipe.num_classes))
    out_path = Path(out) if out else Path(run) / "eval.json"
    rundir.atomic_write_json(out_path, report)
    show = min(per_class, 8)
    pick = [c * per_class + i for c in range(pipe.num_classes) for i in range(show)]
    captions = [f"{names[int(result['labels'][i])]} -> {names[int(result['predicted'][i])]}" for i in pick]
    grid = save_grid(Path(run) / "eval_samples.png", result["images"][pick], captions, nrow=show)
    click.echo(
        f"classifier accuracy of class-conditional samples: {result['accuracy']:.1%} "
        f"({result['n']} samples, {sampler} {steps} steps, guidance {guidance}, seed {seed}; {seconds:.0f} s)"
    )
    click.echo("per class: " + ", ".join(f"{k} {v:.0%}" for k, v in report["per_class_accuracy"].items()))
    if "pr" in report:
        click.echo(f"precision {report['pr']['precision']:.3f}, recall {report['pr']['recall']:.3f} (k=3)")
    if "coverage" in report:
        c = report["coverage"]
        click.echo(
            f"modes covered {c['modes_covered']}/{c['num_classes']}, "
            f"normalized entropy {c['normalized_entropy']:.3f}"
        )
    if "memorization" in report:
        m = report["memorization"]
        click.echo(
            f"nearest training image: median distance {m['median_distance']:.2f} for samples, "
            f"{m['held_out_median_distance']:.2f} for held-out real images; panel {m['panel']}"
        )
    for key in ("fid", "kid"):
        if key in report:
            value = report[key]
            shown = f"{value['value']:.4f}" + (f" +- {value['std']:.4f}" if "std" in value else "")
            if "floor_real_train" in value:
                shown += (
                    f" (floor, {value['generated']} real training images: {value['floor_real_train']:.4f})"
                )
            click.echo(
                f"{key.upper()}: {shown} ({value['real']} real validation vs {value['generated']} generated "
                f"images, features: {value['features']})"
            )
    click.echo(f"wrote {out_path} and {grid}")


def _extra_metrics(run: str, judge, result: dict, wanted: list[str], num_classes: int) -> dict:
    """FID, KID, precision/recall (on ``judge.features``), mode coverage and memorization of ``result``."""
    import torch

    from genlab import rundir
    from genlab.data import DataConfig, load_splits, save_grid
    from genlab.metrics.coverage import mode_coverage, nearest_neighbours
    from genlab.metrics.distances import fid_from_features, kernel_inception_distance
    from genlab.metrics.precision_recall import precision_recall
    from genlab.nn.pretrained import config_from_dict

    out: dict = {}
    images = result["images"]
    if "coverage" in wanted:
        out["coverage"] = mode_coverage(result["predicted"], num_classes)
    if not {"fid", "kid", "pr", "memorization"} & set(wanted):
        return out
    data = config_from_dict(DataConfig, rundir.read_config(run).get("data", {}), f"{run}/config.json")
    train, val = load_splits(data.name, data.split_seed, data.val_fraction, data.image_size)
    with torch.no_grad():
        judge.eval()
        real = torch.cat([judge.features(b) for b in val.images.split(500)])
        fake = torch.cat([judge.features(b) for b in images.split(500)])
    sizes = {
        "real": len(real),
        "generated": len(fake),
        "features": f"classifier penultimate layer ({real.shape[1]} dims)",
    }
    if "fid" in wanted:
        # The floor: real training images, as many as the samples, scored the same way.
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[: len(fake)]
        with torch.no_grad():
            floor_features = torch.cat([judge.features(b) for b in train.images[pick].split(500)])
        floor = fid_from_features(real, floor_features)
        out["fid"] = {"value": fid_from_features(real, fake), "floor_real_train": floor, **sizes}
    if "kid" in wanted:
        mean, std = kernel_inception_distance(real, fake, subset_size=min(len(real), len(fake), 1000))
        out["kid"] = {"value": mean, "std": std, **sizes}
    if "pr" in wanted:
        out["pr"] = {**precision_recall(real, fake), **sizes}
    if "memorization" in wanted:
        samples_nn = nearest_neighbours(images, train.images)
        held_out_nn = nearest_neighbours(val.images, train.images)  # what "new, not copied" looks like
        d = samples_nn["distances"]
        order = d.argsort()[:8]
        pairs = torch.stack([torch.stack([images[i], train.images[samples_nn["indices"][i]]]) for i in order])
        captions = [c for i in order for c in (f"sample d={float(d[i]):.2f}", "nearest training")]
        panel = save_grid(Path(run) / "eval_memorization.png", pairs.flatten(0, 1), captions, nrow=4)
        out["memorization"] = {
            "median_distance": float(d.median()),
            "min_distance": float(d.min()),
            "held_out_median_distance": float(held_out_nn["distances"].median()),
            "pixels": "L2 over pixels in [0, 1]",
            "panel": str(panel),
            "generated": len(images),
            "training": len(train),
        }
    return out
