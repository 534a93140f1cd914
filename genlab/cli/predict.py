"""`genlab predict`: run a trained classifier on image files."""

from __future__ import annotations

import click

from genlab.cli import cli


@cli.command("predict")
@click.argument("run", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option(
    "--top",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many classes to list per image.",
)
def predict_cmd(run: str, images: tuple[str, ...], top: int) -> None:
    """Classify IMAGES with the classifier in RUN (resized to its input size).

    \b
    Example:
      genlab predict runs/classifier-mnist digit.png other.png
    """
    import torch

    from genlab.classification import predict
    from genlab.data import load_image
    from genlab.nn import Classifier

    model = Classifier.from_pretrained(run)
    cfg = model.config
    names = cfg.class_names or tuple(str(i) for i in range(cfg.num_classes))
    batch = torch.stack([load_image(p, size=cfg.image_size, channels=cfg.in_channels) for p in images])
    probs = predict(model, batch)
    for path, p in zip(images, probs, strict=True):
        values, idx = p.topk(min(top, len(names)))
        ranked = ", ".join(f"{names[i]} {v:.1%}" for v, i in zip(values.tolist(), idx.tolist(), strict=True))
        click.echo(f"{path}: {ranked}")
