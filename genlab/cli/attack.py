"""`genlab attack ...`: break a trained classifier, and measure how badly."""

from __future__ import annotations

import click

from genlab.cli import cli
from genlab.cli.common import echo, number_list
from genlab.errors import GenlabError


@cli.group()
def attack() -> None:
    """Adversarial attacks on a trained classifier (images in [0, 1], normalisation inside the model)."""


@attack.command(
    "eval", flags={"pgd_steps": "--steps", "blackbox_budget": "--budget", "apgd_steps": "--apgd-steps"}
)
@click.argument("run", type=click.Path())
@click.option("--eps", default="0.1,0.2,0.3", show_default=True, help="Epsilons (L-inf, pixel units).")
@click.option(
    "--attacks",
    default="fgsm,pgd",
    show_default=True,
    help="Comma list of fgsm, mi-fgsm, pgd, pgd-l2 (radius eps x --l2-scale), deepfool and cw (least-L2 "
    "attacks, counted within the same radius), apgd-ce, apgd-dlr, apgd-t (targeted DLR), square "
    "(black-box, --queries), autoattack (apgd-ce, apgd-t and square, worst case "
    "per image), nes (black-box, --blackbox-n images).",
)
@click.option("--steps", default=40, show_default=True, type=int, help="PGD steps.")
@click.option("--restarts", default=1, show_default=True, type=int, help="PGD runs from new random starts.")
@click.option("--n", default=500, show_default=True, type=int, help="Validation images attacked.")
@click.option("--blackbox-n", default=50, show_default=True, type=int, help="Images the NES attack gets.")
@click.option("--budget", default=2000, show_default=True, type=int, help="NES queries per image.")
@click.option("--apgd-steps", default=100, show_default=True, type=int, help="APGD iterations.")
@click.option("--queries", default=5000, show_default=True, type=int, help="Square queries per image.")
@click.option("--l2-scale", default=5.0, show_default=True, type=float, help="pgd-l2 radius = eps x this.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", default=None, help="JSON to write (default RUN/attack.json); pictures beside it.")
def attack_eval(
    run: str,
    eps: str,
    attacks: str,
    steps: int,
    restarts: int,
    n: int,
    blackbox_n: int,
    budget: int,
    apgd_steps: int,
    queries: int,
    l2_scale: float,
    seed: int,
    out: str | None,
) -> None:
    """Accuracy under each attack at each epsilon on held-out images, an accuracy-versus-epsilon plot,
    example images with their (magnified) perturbations and predictions, and sanity checks against
    gradient masking: eps = 0 is the identity, more PGD steps are never weaker, accuracy falls with
    epsilon, black-box never beats white-box by a wide margin. With several attacks, the worst case per
    image: an image counts as robust only if it survives every one.

    \b
    Examples:
      genlab attack eval runs/classifier-mnist --eps 0.1,0.2,0.3
      genlab attack eval runs/robust-mnist --attacks fgsm,pgd,pgd-l2,nes --steps 40
      genlab attack eval runs/robust-mnist --eps 0.3 --attacks pgd,apgd-ce,apgd-t,square,autoattack
    """
    from genlab.adversarial.evaluation import RobustnessConfig, robustness_report
    from genlab.classification.evaluate import load_classifier_run

    cfg = RobustnessConfig(
        number_list(eps, "--eps", float),
        tuple(a.strip() for a in attacks.split(",") if a.strip()),
        steps,
        l2_scale,
        n,
        blackbox_n,
        budget,
        seed,
        apgd_steps,
        queries,
        restarts,
    )
    model, val, names = load_classifier_run(run)
    report, (path, curve, panel) = robustness_report(run, model, val, names, cfg, out, log=echo)
    failed = [c["name"] for c in report["checks"] if not c["passed"]]
    echo(f"wrote {path}, {curve} and {panel}")
    if failed:
        echo(f"warning: sanity checks failed ({'; '.join(failed)}): suspect gradient masking")


@attack.command("minimal")
@click.argument("run", type=click.Path())
@click.option("--attacks", default="deepfool,cw,pgd-l2", show_default=True, help="Comma list of the three.")
@click.option("--n", default=100, show_default=True, type=int, help="Held-out images (a seeded draw).")
@click.option("--cw-steps", default=200, show_default=True, type=int, help="Adam steps per search round.")
@click.option("--cw-searches", default=9, show_default=True, type=int, help="Binary-search rounds on c.")
@click.option("--cw-lr", default=0.1, show_default=True, type=float, help="Adam's step in tanh space.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", default=None, help="JSON to write (default RUN/minimal.json).")
def attack_minimal(
    run: str, attacks: str, n: int, cw_steps: int, cw_searches: int, cw_lr: float, seed: int, out
) -> None:
    """The least L2 perturbation that flips each held-out image, found by DeepFool, Carlini-Wagner L2 and
    a bisection over the radius of PGD-L2: the share each fools and the median L2.

    \b
    Example:
      genlab attack minimal runs/classifier-mnist --n 100
    """
    from pathlib import Path

    from genlab import rundir
    from genlab.adversarial.evaluation import spread
    from genlab.adversarial.minimal import minimal_report
    from genlab.checks import check_range
    from genlab.classification.evaluate import load_classifier_run

    check_range("n", n, 1, 100_000)
    check_range("cw_steps", cw_steps, 1, 100_000)
    check_range("cw_searches", cw_searches, 1, 100)
    check_range("cw_lr", cw_lr, 1e-6, 10.0)
    model, val, _ = load_classifier_run(run)
    x, y = spread(val.images, val.labels, n, seed)
    names = tuple(a.strip() for a in attacks.split(",") if a.strip())
    result = {"run": run, **minimal_report(model, x, y, names, cw_steps, cw_searches, cw_lr, log=echo)}
    path = Path(out) if out else Path(run) / "minimal.json"
    rundir.atomic_write_json(path, result)
    echo(f"wrote {path}")


@attack.command("image")
@click.argument("run", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option(
    "--attack", "name", default="pgd", show_default=True, type=click.Choice(["fgsm", "pgd", "pgd-l2"])
)
@click.option("--eps", default=0.3, show_default=True, type=float)
@click.option("--steps", default=40, show_default=True, type=int)
@click.option("--target", default=None, help="Class to aim for (targeted attack); default: any wrong class.")
@click.option(
    "--out", default="adversarial.png", show_default=True, help="Grid: image, adversarial, perturbation."
)
def attack_image(
    run: str, images: tuple[str, ...], name: str, eps: float, steps: int, target: str | None, out: str
) -> None:
    """Attack image files and show the adversarial images, their magnified perturbations and predictions.

    \b
    Example:
      genlab attack image runs/classifier-mnist digit.png --eps 0.2 --target 3
    """
    from genlab.adversarial.examples import attack_files
    from genlab.classification.evaluate import load_classifier_run

    model, _, names = load_classifier_run(run)
    path, pairs = attack_files(model, names, images, name, eps=eps, steps=steps, target=target, out=out)
    for p, (clean, adversarial) in zip(images, pairs, strict=True):
        echo(f"{p}: {clean} -> {adversarial}")
    echo(f"wrote {path}")


@attack.command("optimize")
@click.argument("run", type=click.Path())
@click.option("--target", required=True, help="Class to optimise toward.")
@click.option("--source", default=None, type=click.Path(), help="Start from this image (default: noise).")
@click.option("--lam", default=0.0, show_default=True, type=float, help="Weight of ||x - x_source||^2.")
@click.option("--steps", default=200, show_default=True, type=int)
@click.option("--n", default=8, show_default=True, type=int, help="Images from noise (with no --source).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", default="optimized.png", show_default=True)
def attack_optimize(
    run: str, target: str, source: str | None, lam: float, steps: int, n: int, seed: int, out: str
) -> None:
    """Optimise an input toward a class: from noise (what the network thinks a class looks like) or from
    a source image with lambda ||x - x_source||^2 keeping it close (a targeted adversarial example).

    \b
    Examples:
      genlab attack optimize runs/classifier-mnist --target 7
      genlab attack optimize runs/classifier-mnist --target 3 --source digit.png --lam 0.05
    """
    from genlab.adversarial.examples import optimized_examples
    from genlab.classification.evaluate import load_classifier_run

    model, _, names = load_classifier_run(run)
    path = optimized_examples(
        model, names, target, source=source, lam=lam, steps=steps, n=n, seed=seed, out=out
    )
    echo(f"wrote {path}")


@attack.command("patch")
@click.argument("run", type=click.Path())
@click.option("--target", required=True, help="Class the patch should make the classifier see.")
@click.option("--size", default=12, show_default=True, type=int, help="Side of the square patch in pixels.")
@click.option("--steps", default=300, show_default=True, type=int)
@click.option("--tv-weight", default=0.01, show_default=True, type=float, help="Total-variation weight.")
@click.option("--print-weight", default=0.01, show_default=True, type=float, help="Printability weight.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", default="patch.png", show_default=True)
def attack_patch(
    run: str, target: str, size: int, steps: int, tv_weight: float, print_weight: float, seed: int, out: str
) -> None:
    """Learn an adversarial patch on the first half of the held-out images and measure it on the other
    half, pasted at random places (Brown et al. 2017).

    \b
    Example:
      genlab attack patch runs/classifier-mnist --target 8 --size 12
    """
    from genlab.adversarial.patch import patch_demo
    from genlab.classification.evaluate import load_classifier_run

    model, val, names = load_classifier_run(run)
    result, others = patch_demo(
        model,
        val,
        names,
        target,
        size=size,
        steps=steps,
        tv_weight=tv_weight,
        print_weight=print_weight,
        seed=seed,
        out=out,
    )
    echo(
        f"patch of {size}x{size} pixels toward '{target}': {result.success_rate:.1%} of {others} held-out "
        f"images of other classes become '{target}' (without it: {result.clean_target_rate:.1%}); {out}"
    )


@attack.command("transfer")
@click.argument("surrogate", type=click.Path())
@click.argument("target_run", metavar="TARGET", type=click.Path())
@click.option("--eps", default="0.1,0.2,0.3", show_default=True)
@click.option("--steps", default=40, show_default=True, type=int)
@click.option("--n", default=500, show_default=True, type=int)
@click.option(
    "--attack",
    "crafted_by",
    default="pgd",
    show_default=True,
    type=click.Choice(["pgd", "mi-fgsm"]),
    help="What crafts the examples on the surrogate; mi-fgsm: momentum (Dong et al. 2018), --steps 10.",
)
def attack_transfer(surrogate: str, target_run: str, eps: str, steps: int, n: int, crafted_by: str) -> None:
    """Craft PGD (or MI-FGSM) examples on SURROGATE (a classifier you trained) and apply them to TARGET,
    which the attack never queries: the transfer attack (Papernot et al. 2017).

    \b
    Example:
      genlab train classifier --data mnist --widths 8,16 --seed 1 --out runs/surrogate
      genlab attack transfer runs/surrogate runs/classifier-mnist
      genlab attack transfer runs/surrogate runs/classifier-mnist --attack mi-fgsm --steps 10
    """
    from genlab.adversarial.evaluation import transfer_attack
    from genlab.classification.evaluate import load_classifier_run

    source, _, _ = load_classifier_run(surrogate)
    target, val, _ = load_classifier_run(target_run)
    eps_list = number_list(eps, "--eps", float)
    x, y = val.images[:n], val.labels[:n]
    transfer_attack(source, target, x, y, eps=eps_list, steps=steps, attack=crafted_by, log=echo)


@attack.command("linearity")
@click.option("--data", default="mnist", show_default=True)
@click.option(
    "--classes", default="3,7", show_default=True, help="The two classes of the logistic regression."
)
@click.option("--eps", default="0,0.05,0.1,0.2", show_default=True)
def attack_linearity(data: str, classes: str, eps: str) -> None:
    """The linearity argument as a runnable demonstration: a logistic regression on two classes, whose
    score w.x moves by exactly eps ||w||_1 under x* = x - eps sign(w), although no pixel moves by more
    than eps (Goodfellow et al. 2015, section 3).

    \b
    Example:
      genlab attack linearity --data mnist --classes 3,7
    """
    from genlab.adversarial.linearity import linearity_demo
    from genlab.data import load_splits

    pair = number_list(classes, "--classes")
    if len(pair) != 2:
        raise GenlabError("--classes takes two class indices, like 3,7")
    train, _ = load_splits(data, 0, 0.1, None)
    report = linearity_demo(train, pair, number_list(eps, "--eps", float))
    echo(
        f"logistic regression {pair[0]} vs {pair[1]} on {report.dimension} pixels: "
        f"{report.clean_accuracy:.1%} accuracy"
    )
    echo("   eps   eps*||w||_1   measured shift of w.x   accuracy   largest pixel change")
    for r in report.rows:
        echo(
            f"  {r['eps']:<5} {r['predicted_shift']:>11.3f} {r['measured_shift']:>22.3f} "
            f"{r['accuracy']:>10.1%} {r['max_pixel_change']:>20.3f}"
        )
