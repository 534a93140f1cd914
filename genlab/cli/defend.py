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
@click.option(
    "--adaptive-steps",
    default=20,
    show_default=True,
    type=int,
    help="PGD steps of the adaptive attack through the purifier (0: skip it).",
)
@click.option(
    "--eot", default=4, show_default=True, type=int, help="Purifications averaged per adaptive gradient."
)
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
    adaptive_steps: int,
    eot: int,
    out: str | None,
) -> None:
    """Diffusion purification: attack held-out images with PGD on CLASSIFIER, noise them to t* and
    denoise them with the DIFFUSION run, then classify; accuracy on clean and attacked images at every
    strength. The PGD attack does not see the purifier; the adaptive one beside it does (BPDA through
    the purifier, EOT over its noise: Athalye et al. 2018).

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
        adaptive_steps=adaptive_steps,
        eot=eot,
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


@defend.command("certify")
@click.argument("classifier", type=click.Path())
@click.option(
    "--sigma",
    default=None,
    type=float,
    help="Standard deviation of the smoothing noise (default: the run's --noise-sigma, else 0.25).",
)
@click.option("--n0", default=100, show_default=True, type=int, help="Noise samples that choose the class.")
@click.option(
    "--n", default=10_000, show_default=True, type=int, help="Noise samples that bound its probability."
)
@click.option("--alpha", default=0.001, show_default=True, type=float, help="Failure probability.")
@click.option(
    "--predict-n", default=1000, show_default=True, type=int, help="Samples of PREDICT per image (0: skip)."
)
@click.option("--images", default=500, show_default=True, type=int, help="Held-out images certified.")
@click.option("--radii", default="0,0.25,0.5,0.75,1,1.25,1.5", show_default=True, help="L2 radii reported.")
@click.option(
    "--denoiser",
    default=None,
    type=click.Path(),
    help="A diffusion run of the same images: denoised smoothing, one denoising call before CLASSIFIER.",
)
@click.option("--batch-size", default=1000, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--compare",
    multiple=True,
    type=click.Path(),
    help="An earlier certify JSON whose curve joins this one's in the picture (repeatable).",
)
@click.option("--out", default=None, help="JSON to write (default RUN/certify.json); the curve beside it.")
def certify_cmd(
    classifier: str,
    sigma: float | None,
    n0: int,
    n: int,
    alpha: float,
    predict_n: int,
    images: int,
    radii: str,
    denoiser: str | None,
    batch_size: int,
    seed: int,
    compare: tuple[str, ...],
    out: str | None,
) -> None:
    """Randomized smoothing (Cohen et al. 2019): certify held-out images of CLASSIFIER, the base
    classifier, against every L2 perturbation, and report the certified accuracy at each radius (with
    probability 1 - alpha per image, whatever the attack). Train the base classifier on the noise it is
    certified with (`genlab train classifier --noise-sigma 0.25`), or give a standard classifier and a
    diffusion run as --denoiser (denoised smoothing, Carlini et al. 2023).

    \b
    Examples:
      genlab defend certify runs/smooth-mnist --sigma 0.25 --n 10000 --alpha 0.001 --images 500
      genlab defend certify runs/classifier-mnist --denoiser runs/diffusion-mnist --n 1000 --images 100
    """
    from genlab import rundir
    from genlab.adversarial.plots import plot_certified_accuracy
    from genlab.adversarial.smoothing import (
        CertifyConfig,
        DenoisedClassifier,
        certify_report,
        read_certify_report,
    )
    from genlab.classification.evaluate import load_classifier_run

    earlier = {f"{Path(f).parent.name}/{Path(f).name}": read_certify_report(f) for f in compare}
    model, val, _ = load_classifier_run(classifier)
    if sigma is None:
        trained = rundir.read_config(classifier, kind="classifier").get("data", {}).get("noise_sigma", 0.0)
        sigma = trained or 0.25
    cfg = CertifyConfig(
        sigma=sigma,
        n0=n0,
        n=n,
        alpha=alpha,
        predict_n=predict_n,
        images=images,
        radii=number_list(radii, "--radii", float),
        batch_size=batch_size,
        seed=seed,
    )
    base, label = model, f"{Path(classifier).name}, sigma {sigma:g}"
    if denoiser:
        from genlab.pipelines import DiffusionPipeline

        base = DenoisedClassifier(model, DiffusionPipeline.from_pretrained(denoiser, device="cpu"), sigma)
        label = f"{Path(denoiser).name} + {label}"
        echo(f"denoised smoothing: one call of {denoiser} at noise level {2 * sigma:g} (model space)")
    report = {
        "classifier": classifier,
        "denoiser": denoiser,
        **certify_report(base, val.images, val.labels, cfg, echo),
    }
    name = "certify-denoised.json" if denoiser else "certify.json"
    path = Path(out) if out else Path(classifier) / name
    rundir.atomic_write_json(path, report)
    curve = plot_certified_accuracy({label: report, **earlier}, path.with_suffix(".png"))
    echo(f"wrote {path} and {curve}")
