"""`genlab eval`: measure what a trained generator makes."""

from __future__ import annotations

from pathlib import Path

import click

from genlab.cli import cli
from genlab.cli.common import sampling_options


@cli.command("eval")
@click.argument("run", type=click.Path())
@click.option(
    "--classifier", required=True, type=click.Path(), help="A classifier run that judges the samples."
)
@click.option(
    "--n", default=500, show_default=True, type=int, help="Samples in all (split evenly over classes)."
)
@sampling_options
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
    out: str | None,
    device: str,
) -> None:
    """Classifier accuracy of class-conditional samples: how often the asked class is drawn.

    Writes RUN/eval.json and RUN/eval_samples.png (samples captioned 'asked -> judged').

    \b
    Example:
      genlab eval runs/diffusion-mnist --classifier runs/classifier-mnist --n 500 --steps 20
    """
    import time

    from genlab import rundir
    from genlab.data import save_grid
    from genlab.metrics import conditional_accuracy
    from genlab.nn import Classifier
    from genlab.pipelines import DiffusionPipeline

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
    click.echo(f"wrote {out_path} and {grid}")
