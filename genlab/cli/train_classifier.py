"""`genlab train classifier`: a CNN classifier, plainly or adversarially trained."""

from __future__ import annotations

from typing import Any

import click

from genlab.cli.common import data_fields, data_options, number_list, train_options
from genlab.cli.flags import as_flags
from genlab.cli.train import train
from genlab.cli.training import report_training, run_training
from genlab.errors import GenlabError
from genlab.recipes import CLASSIFIER_DEFAULTS

# AdversarialTrainingConfig's fields -> the options that set them
ADVERSARIAL_FLAGS = {
    "method": "--adversarial",
    "eps": "--adv-eps",
    "steps": "--adv-steps",
    "alpha": "--adv-alpha",
    "norm": "--adv-norm",
    "clean_weight": "--clean-weight",
    "warmup_steps": "--adv-warmup",
    "beta": "--trades-beta",
}


@train.command("classifier")
@data_options
@click.option(
    "--widths", default="16,32", show_default=True, help="Channels of each conv stage (one pool each)."
)
@click.option("--hidden", default=128, show_default=True, type=int, help="Width of the hidden dense layer.")
@click.option("--dropout", default=0.3, show_default=True, type=float)
@click.option("--no-augment", is_flag=True, help="Train without random rotations/shifts/scalings.")
@click.option(
    "--noise-sigma",
    default=0.0,
    show_default=True,
    type=float,
    help="Gaussian noise added to every training image: the base classifier of randomized smoothing "
    "(`genlab defend certify`), trained at the sigma it is certified with (Cohen et al. 2019).",
)
@click.option(
    "--noisy",
    is_flag=True,
    help="Noise-aware: trained on images noised by the diffusion forward process and told the timestep, "
    "the guide of classifier guidance (`genlab sample --guidance-type classifier`).",
)
@click.option(
    "--adversarial",
    default="none",
    show_default=True,
    type=click.Choice(["none", "fgsm", "pgd", "trades"]),
    help="Adversarial training: attack every batch against the current weights and learn from it "
    "(trades: Zhang et al.'s clean loss plus beta times the KL to the attacked prediction).",
)
@click.option("--adv-eps", default=0.3, show_default=True, type=float, help="Epsilon of the training attack.")
@click.option(
    "--adv-steps", default=10, show_default=True, type=int, help="PGD steps of the training attack."
)
@click.option(
    "--adv-alpha",
    default=None,
    type=float,
    help="PGD step size (default 2.5 eps / steps); --adv-steps 1 --adv-alpha 0.375 with eps 0.3 is the "
    "fast FGSM-with-random-start training of Wong et al. (2020).",
)
@click.option("--adv-norm", default="linf", show_default=True, type=click.Choice(["linf", "l2"]))
@click.option(
    "--adv-warmup", default=0, show_default=True, type=int, help="Steps over which epsilon ramps up from 0."
)
@click.option(
    "--trades-beta",
    default=6.0,
    show_default=True,
    type=float,
    help="TRADES: weight of the KL term; higher trades clean accuracy for robustness.",
)
@click.option(
    "--clean-weight",
    default=0.0,
    show_default=True,
    type=float,
    help="alpha in alpha J(x) + (1 - alpha) J(x_adv): 0 is Madry et al.'s, 0.5 Goodfellow et al.'s.",
)
@train_options(**CLASSIFIER_DEFAULTS)
@click.pass_context
def train_classifier(ctx: click.Context, **params: Any) -> None:
    """Train a CNN classifier (normalisation inside; inputs in [0, 1]).

    \b
    Examples:
      genlab train classifier --data mnist                  # ~99% validation accuracy in ~1.5 min
      genlab train classifier --data digits --steps 300
      genlab train classifier --data folder:./pets --image-size 64 --minutes 10
      genlab train classifier --out runs/classifier-mnist --resume
      genlab train classifier --data mnist --adversarial pgd --adv-eps 0.3 --minutes 20   # Madry et al.
      genlab train classifier --data mnist --adversarial trades --trades-beta 6 --adv-eps 0.3
      genlab train classifier --data mnist --noise-sigma 0.25 --steps 3000   # for randomized smoothing
      genlab train classifier --data mnist --noisy --steps 3000   # the guide of classifier guidance
      torchrun --nproc_per_node=2 -m genlab train classifier --data mnist
    """
    from genlab.adversarial.training import (
        AdversarialTrainingConfig,
        classifier_task,
        classifier_task_from_run_config,
    )
    from genlab.classification.task import ClassifierDataConfig, ClassifierTask

    def build(cfg: Any) -> ClassifierTask:
        data = ClassifierDataConfig(
            **data_fields(params), augment=not params["no_augment"], noise_sigma=params["noise_sigma"]
        )
        widths = number_list(params["widths"], "--widths")
        adversarial = None
        if params["adversarial"] != "none":
            try:
                adversarial = AdversarialTrainingConfig(
                    params["adversarial"],
                    params["adv_eps"],
                    params["adv_steps"],
                    params["adv_alpha"],
                    norm=params["adv_norm"],
                    clean_weight=params["clean_weight"],
                    warmup_steps=params["adv_warmup"],
                    beta=params["trades_beta"],
                )
            except GenlabError as e:  # its `steps` are --adv-steps, where the command's own are --steps
                raise GenlabError(as_flags(str(e), ADVERSARIAL_FLAGS)) from None
        return classifier_task(
            data,
            adversarial,
            params["noisy"],
            widths=widths,
            hidden=params["hidden"],
            dropout=params["dropout"],
        )

    result = run_training(ctx, params, "classifier", build, classifier_task_from_run_config)
    report_training(
        result,
        {
            "val_acc": "validation accuracy",
            "val_robust_acc": "validation accuracy under PGD at the training epsilon",
            "val_noisy_acc": "validation accuracy under the training noise",
            "val_acc_t500": "validation accuracy at diffusion timestep 500 (of 1000)",
            "val_loss": "validation loss",
        },
    )
