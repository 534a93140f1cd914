"""`genlab defend ...`: backdoor poisoning and its detection, input sanitisation, diffusion purification.
(Adversarial training is `genlab train classifier --adversarial pgd`.)"""

from __future__ import annotations

from pathlib import Path

import click

from genlab.cli import cli
from genlab.cli.common import echo, fresh_run_dir, number_list


@cli.group()
def defend() -> None:
    """Defenses against adversarial inputs and poisoned training data."""


@defend.command("backdoor-demo", flags={"size": "--trigger-size"})
@click.option("--data", default="mnist", show_default=True)
@click.option(
    "--fraction", default=0.05, show_default=True, type=float, help="Share of other-class images poisoned."
)
@click.option("--target", default=0, show_default=True, type=int, help="Class the trigger maps to.")
@click.option(
    "--trigger-size", default=4, show_default=True, type=int, help="Side of the checkerboard trigger."
)
@click.option("--steps", default=800, show_default=True, type=int, help="Training steps of each classifier.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", default=None, help="Folder for both runs and the report (default runs/backdoor-DATA).")
@click.option("--no-progress", is_flag=True)
def backdoor_demo(
    data: str,
    fraction: float,
    target: int,
    trigger_size: int,
    steps: int,
    seed: int,
    out: str | None,
    no_progress: bool,
) -> None:
    """Poison a fraction of the training images with a trigger patch and the target label (BadNets), train
    a clean and a poisoned classifier with the same recipe, and report clean accuracy of both, the attack
    success rate (held-out images of other classes, triggered, classified as the target), and how well
    activation clustering and the spectral signature find the poisoned training images.

    \b
    Example:
      genlab defend backdoor-demo --data mnist --fraction 0.05 --target 0
    """
    from genlab.adversarial.backdoor import PoisonConfig
    from genlab.adversarial.backdoor_demo import backdoor_demo

    folder = (
        Path(out) if out else fresh_run_dir(f"runs/backdoor-{data.split(':')[-1].rstrip('/').split('/')[-1]}")
    )
    poison = PoisonConfig(fraction, target, trigger_size, seed)
    backdoor_demo(data, folder, poison, steps, progress=not no_progress, log=echo)
    echo(f"report {folder / 'backdoor.json'}, picture {folder / 'backdoor.png'}")


@defend.command("purify", flags={"strengths": "--strength"})
@click.argument("classifier", type=click.Path())
@click.argument("diffusion", type=click.Path())
@click.option("--eps", default=0.3, show_default=True, type=float, help="Epsilon of the PGD attack.")
@click.option("--attack-steps", default=40, show_default=True, type=int)
@click.option("--strength", default="0.05,0.1,0.2,0.3", show_default=True, help="Noise levels t*/T to try.")
@click.option("--steps", default=10, show_default=True, type=int, help="Denoising steps.")
@click.option("--sampler", default="ddpm", show_default=True)
@click.option("--n", default=200, show_default=True, type=int, help="Held-out images.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", default=None, help="Picture of clean, attacked and purified images (PNG).")
def purify_cmd(
    classifier: str,
    diffusion: str,
    eps: float,
    attack_steps: int,
    strength: str,
    steps: int,
    sampler: str,
    n: int,
    seed: int,
    out: str | None,
) -> None:
    """Diffusion purification: attack held-out images with PGD on CLASSIFIER, noise them to t* and
    denoise them with the DIFFUSION run, then classify; accuracy on clean and attacked images at every
    strength (the attack does not see the purifier: an adaptive one would do better).

    \b
    Example:
      genlab defend purify runs/classifier-mnist runs/diffusion-mnist --eps 0.3 --strength 0.1,0.2
    """
    from genlab.adversarial.purification import PurificationConfig, purification_demo
    from genlab.classification.evaluate import load_classifier_run
    from genlab.data import save_grid
    from genlab.pipelines import DiffusionPipeline

    model, val, _ = load_classifier_run(classifier)
    pipe = DiffusionPipeline.from_pretrained(diffusion, device="cpu")
    cfg = PurificationConfig(
        eps=eps,
        attack_steps=attack_steps,
        strengths=number_list(strength, "--strength", float),
        steps=steps,
        sampler=sampler,
        n=n,
        seed=seed,
    )
    _, rows = purification_demo(model, pipe, val.images, val.labels, cfg, log=echo)
    if out:
        echo(f"wrote {save_grid(out, rows, nrow=8)} (rows: clean, attacked, purified per strength)")


@defend.command("detect")
@click.argument("run", type=click.Path())
@click.option(
    "--fpr", default=0.05, show_default=True, type=float, help="False-positive rate to set thresholds."
)
@click.option(
    "--eps", default="0.1,0.3", show_default=True, help="Epsilons of the FGSM and PGD inputs to detect."
)
@click.option(
    "--ood",
    default="noise,shapes",
    show_default=True,
    help="Out-of-distribution sets: noise, mnist, "
    "digits, shapes (converted to the classifier's channels and size).",
)
@click.option(
    "--n", default=400, show_default=True, type=int, help="Held-out images (half calibrate, half test)."
)
@click.option("--seed", default=0, show_default=True, type=int)
def detect_cmd(run: str, fpr: float, eps: str, ood: str, n: int, seed: int) -> None:
    """Fit an input sanitiser (feature squeezing: the prediction change under 1-bit depth and a 2x2 median
    filter) and the maximum-softmax baseline on half of the held-out images for a false-positive rate, then
    report on the other half: the false-positive rate reached, and the share of adversarial (FGSM, PGD) and
    out-of-distribution inputs flagged, with AUROC.

    \b
    Example:
      genlab defend detect runs/classifier-mnist --fpr 0.05 --eps 0.1,0.3
    """
    from genlab.adversarial.detection import detection_demo
    from genlab.classification.evaluate import load_classifier_run

    model, val, _ = load_classifier_run(run)
    eps_list = number_list(eps, "--eps", float)
    ood_names = tuple(name.strip() for name in ood.split(",") if name.strip())
    detection_demo(
        model, val.images, val.labels, fpr=fpr, eps=eps_list, ood=ood_names, n=n, seed=seed, log=echo
    )
