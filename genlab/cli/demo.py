"""`genlab demo`: the main job of `make demo`, end to end on the CPU in a few minutes."""

from __future__ import annotations

import click

from genlab.cli import cli
from genlab.cli.common import fresh_run_dir
from genlab.cli.train import CLASSIFIER_DEFAULTS


@cli.command("demo")
@click.option("--out", default="runs/demo", show_default=True, help="Folder for everything the demo writes.")
@click.option("--steps", default=800, show_default=True, type=int, help="Training steps of the classifier.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def demo(out: str, steps: int, no_progress: bool) -> None:
    """Show the data sets, train an MNIST classifier on the shared engine, and evaluate it.

    Writes captioned grids of mnist and shapes, then a classifier run directory (weights, EMA,
    metrics.jsonl, prediction grids); prints the validation accuracy and where everything is.
    """
    from genlab.classification import evaluate_classifier
    from genlab.classification.task import ClassifierTask, DataConfig
    from genlab.data import load_dataset, save_grid
    from genlab.nn import Classifier
    from genlab.train import TrainConfig, Trainer, seed_step

    root = fresh_run_dir(out)
    root.mkdir(parents=True)
    click.echo(f"genlab demo -> {root}")

    seed_step(0, -1)
    task = ClassifierTask(DataConfig("mnist"))
    mnist, shapes = task.train_data.spread(32), load_dataset("shapes", "train").spread(32)
    grids = [
        save_grid(root / "data_mnist.png", mnist.images, mnist.captions, nrow=8),
        save_grid(root / "data_shapes.png", shapes.images, shapes.captions, nrow=8),
    ]
    click.echo("1/3 data grids: " + ", ".join(str(g) for g in grids))

    click.echo(f"2/3 training a classifier on mnist ({len(task.train_data)} train images, {steps} steps)")
    cfg = TrainConfig(**{**CLASSIFIER_DEFAULTS, "steps": steps, "progress": not no_progress})
    result = Trainer(task, cfg, root / "classifier").train()

    model = Classifier.from_pretrained(result.run_dir)
    m = evaluate_classifier(model, task.val_data)
    click.echo(
        f"3/3 reloaded from {result.run_dir}: validation accuracy {m['accuracy']:.2%} on {int(m['n'])} "
        f"held-out MNIST digits, trained in {result.seconds / 60:.1f} min"
    )
    click.echo("outputs:")
    click.echo(f"  data grids          {grids[0]}, {grids[1]}")
    click.echo(f"  classifier run      {result.run_dir} (config.json, model.safetensors, ema.safetensors)")
    click.echo(f"  training log        {result.run_dir / 'metrics.jsonl'}")
    click.echo(f"  prediction grids    {result.run_dir / 'samples'}")
    click.echo(f"try: genlab predict {result.run_dir} IMAGE.png")
