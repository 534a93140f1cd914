"""`genlab attack ...`: break a trained classifier, and measure how badly."""

from __future__ import annotations

from pathlib import Path

import click

from genlab.cli import cli
from genlab.cli.common import echo, number_list
from genlab.errors import GenlabError


def _load(run: str, device: str = "cpu"):
    from genlab.classification.evaluate import load_classifier_run

    return load_classifier_run(run, device)


@cli.group()
def attack() -> None:
    """Adversarial attacks on a trained classifier (images in [0, 1], normalisation inside the model)."""


@attack.command("eval")
@click.argument("run", type=click.Path())
@click.option("--eps", default="0.1,0.2,0.3", show_default=True, help="Epsilons (L-inf, pixel units).")
@click.option(
    "--attacks",
    default="fgsm,pgd",
    show_default=True,
    help="Comma list of fgsm, pgd, pgd-l2 (radius eps x --l2-scale), nes (black-box, --blackbox-n images).",
)
@click.option("--steps", default=40, show_default=True, type=int, help="PGD steps.")
@click.option("--n", default=500, show_default=True, type=int, help="Validation images attacked.")
@click.option("--blackbox-n", default=50, show_default=True, type=int, help="Images the NES attack gets.")
@click.option("--budget", default=2000, show_default=True, type=int, help="NES queries per image.")
@click.option("--l2-scale", default=5.0, show_default=True, type=float, help="pgd-l2 radius = eps x this.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", default=None, help="JSON to write (default RUN/attack.json); pictures beside it.")
def attack_eval(
    run: str,
    eps: str,
    attacks: str,
    steps: int,
    n: int,
    blackbox_n: int,
    budget: int,
    l2_scale: float,
    seed: int,
    out: str | None,
) -> None:
    """Accuracy under each attack at each epsilon on held-out images, an accuracy-versus-epsilon plot,
    example images with their (magnified) perturbations and predictions, and sanity checks against
    gradient masking: eps = 0 is the identity, more PGD steps are never weaker, accuracy falls with
    epsilon, black-box never beats white-box by a wide margin.

    \b
    Examples:
      genlab attack eval runs/classifier-mnist --eps 0.1,0.2,0.3
      genlab attack eval runs/robust-mnist --attacks fgsm,pgd,pgd-l2,nes --steps 40
    """
    from genlab import rundir
    from genlab.adversarial.evaluation import RobustnessConfig, evaluate_robustness, example_panel, spread
    from genlab.adversarial.plots import plot_accuracy_vs_eps

    cfg = RobustnessConfig(
        number_list(eps, "--eps", float),
        tuple(a.strip() for a in attacks.split(",") if a.strip()),
        steps,
        l2_scale,
        n,
        blackbox_n,
        budget,
        seed,
    )
    model, val, names = _load(run)
    report = evaluate_robustness(model, val.images, val.labels, cfg, log=echo)
    out_path = Path(out) if out else Path(run) / "attack.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    curve = plot_accuracy_vs_eps(report, out_path.with_name(f"{out_path.stem}_curve.png"))
    panel = example_panel(
        spread(val.images, val.labels, cfg.n, seed)[0],
        report,
        model,
        out_path.with_name(f"{out_path.stem}_examples.png"),
        names,
    )
    result = {
        "run": run,
        **report.to_dict(),
        "settings": {"pgd_steps": steps, "l2_scale": l2_scale, "seed": seed},
        "pictures": {"curve": curve.name, "examples": panel.name},
    }
    rundir.atomic_write_json(out_path, result)
    failed = [c["name"] for c in report.checks if not c["passed"]]
    echo(f"wrote {out_path}, {curve} and {panel}")
    if failed:
        echo(f"warning: sanity checks failed ({'; '.join(failed)}): suspect gradient masking")


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
    import torch

    from genlab.adversarial.attacks import fgsm, pgd
    from genlab.adversarial.evaluation import magnify
    from genlab.classification.evaluate import predict
    from genlab.data import load_image, save_grid

    model, _, names = _load(run)
    cfg = model.config
    x = torch.stack([load_image(p, cfg.image_size, cfg.in_channels) for p in images])
    clean = predict(model, x).argmax(1)
    if target is not None:
        if target not in names:
            raise GenlabError(f"unknown --target '{target}'; the classifier knows {', '.join(names)}")
        y, targeted = torch.full((len(x),), names.index(target)), True
    else:
        y, targeted = clean, False
    if name == "fgsm":
        adv = fgsm(model, x, y, eps, targeted)
    else:
        adv = pgd(model, x, y, eps, steps, norm="l2" if name == "pgd-l2" else "linf", targeted=targeted)
    probs = predict(model, adv)
    grid = torch.cat([x, adv, magnify(adv - x)[0]])
    captions = [f"clean: {names[k]}" for k in clean.tolist()]
    captions += [f"{name}: {names[k]} ({probs[i, k]:.0%})" for i, k in enumerate(probs.argmax(1).tolist())]
    captions += ["perturbation (magnified)"] * len(x)
    path = save_grid(out, grid, captions, nrow=len(x))
    for p, k0, k in zip(images, clean.tolist(), probs.argmax(1).tolist(), strict=True):
        echo(f"{p}: {names[k0]} -> {names[k]}")
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
    import torch

    from genlab.adversarial.attacks import optimize_input
    from genlab.classification.evaluate import predict
    from genlab.data import load_image, save_grid

    model, _, names = _load(run)
    if target not in names:
        raise GenlabError(f"unknown --target '{target}'; the classifier knows {', '.join(names)}")
    cfg = model.config
    src = load_image(source, cfg.image_size, cfg.in_channels)[None] if source else None
    count = 1 if src is not None else n
    y = torch.full((count,), names.index(target))
    x = optimize_input(
        model,
        y,
        src,
        steps=steps,
        lam=lam,
        shape=(cfg.in_channels, cfg.image_size, cfg.image_size),
        generator=torch.Generator().manual_seed(seed),
    )
    probs = predict(model, x)
    images = torch.cat([src, x]) if src is not None else x
    captions = (["source"] if src is not None else []) + [
        f"{names[k]} ({probs[i, k]:.0%})" for i, k in enumerate(probs.argmax(1).tolist())
    ]
    echo(f"wrote {save_grid(out, images, captions)}")


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
    import torch

    from genlab.adversarial.patch import apply_patch, evaluate_patch, random_places, train_patch
    from genlab.classification.evaluate import predict
    from genlab.data import save_grid

    model, val, names = _load(run)
    if target not in names:
        raise GenlabError(f"unknown --target '{target}'; the classifier knows {', '.join(names)}")
    k = names.index(target)
    half = len(val) // 2
    g = torch.Generator().manual_seed(seed)
    patch = train_patch(
        model, val.images[:half], k, size, steps, tv_weight=tv_weight, print_weight=print_weight, generator=g
    )
    result = evaluate_patch(model, patch, val.images[half:], val.labels[half:], k, generator=g)
    others = int((val.labels[half:] != k).sum())
    x = val.images[half:][val.labels[half:] != k][:16]
    rows, cols = random_places(len(x), x.shape[2], size, g)
    patched = apply_patch(x, patch, rows, cols)
    pred = predict(model, patched).argmax(1).tolist()
    side = x.shape[2]
    big = torch.nn.functional.pad(patch, [0, side - size, 0, side - size], value=0.5)[None]
    save_grid(out, torch.cat([big, patched]), ["the patch"] + [names[p] for p in pred], nrow=9)
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
def attack_transfer(surrogate: str, target_run: str, eps: str, steps: int, n: int) -> None:
    """Craft PGD examples on SURROGATE (a classifier you trained) and apply them to TARGET, which the
    attack never queries: the transfer attack (Papernot et al. 2017).

    \b
    Example:
      genlab train classifier --data mnist --widths 8,16 --seed 1 --out runs/surrogate
      genlab attack transfer runs/surrogate runs/classifier-mnist
    """
    import torch

    from genlab.adversarial.attacks import pgd
    from genlab.adversarial.evaluation import accuracy

    source, val, _ = _load(surrogate)
    target, val_t, _ = _load(target_run)
    if (
        source.config.image_size != target.config.image_size
        or source.config.in_channels != target.config.in_channels
    ):
        raise GenlabError("the surrogate and the target must take images of the same shape")
    x, y = val_t.images[:n], val_t.labels[:n]
    echo(
        f"target clean accuracy {accuracy(target, x, y):.1%}, surrogate {accuracy(source, x, y):.1%} "
        f"({len(x)} images)"
    )
    for e in number_list(eps, "--eps", float):
        adv = pgd(source, x, y, e, steps, generator=torch.Generator().manual_seed(0))
        white = pgd(target, x, y, e, steps, generator=torch.Generator().manual_seed(0))
        echo(
            f"  eps {e}: target accuracy under transfer {accuracy(target, adv, y):.1%} "
            f"(surrogate itself {accuracy(source, adv, y):.1%}; "
            f"white-box on the target {accuracy(target, white, y):.1%})"
        )


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
