"""`genlab defend ...`: backdoor poisoning and its detection, input sanitisation, diffusion purification.
(Adversarial training is `genlab train classifier --adversarial pgd`.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from genlab.cli import cli
from genlab.cli.common import echo, fresh_run_dir, number_list
from genlab.errors import GenlabError


@cli.group()
def defend() -> None:
    """Defenses against adversarial inputs and poisoned training data."""


@defend.command("backdoor-demo")
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
    import torch

    from genlab import rundir
    from genlab.adversarial.backdoor import (
        PoisonConfig,
        PoisonedClassifierTask,
        activation_clustering,
        activations,
        precision_recall,
        spectral_scores,
        stamp,
    )
    from genlab.classification.evaluate import predict
    from genlab.classification.task import ClassifierDataConfig, ClassifierTask
    from genlab.data import save_grid
    from genlab.recipes import CLASSIFIER_DEFAULTS
    from genlab.train import TrainConfig, Trainer, seed_step

    folder = (
        Path(out) if out else fresh_run_dir(f"runs/backdoor-{data.split(':')[-1].rstrip('/').split('/')[-1]}")
    )
    if folder.exists() and any(folder.iterdir()):
        raise GenlabError(f"{folder} already exists and is not empty; choose another --out")
    poison_cfg = PoisonConfig(fraction, target, trigger_size, seed)
    data_cfg = ClassifierDataConfig(name=data)
    recipe = {
        **CLASSIFIER_DEFAULTS,
        "steps": steps,
        "seed": seed,
        "progress": not no_progress,
        "sample_every": 0,
        "checkpoint_every": 0,
    }
    cfg = TrainConfig(**{k: v for k, v in recipe.items() if k in TrainConfig.__dataclass_fields__})

    seed_step(seed, -1)
    clean_task = ClassifierTask(data_cfg)
    seed_step(seed, -1)
    dirty_task = PoisonedClassifierTask(data_cfg, poison_cfg)
    truth = dirty_task.poisoned
    echo(
        f"poisoned {int(truth.sum())} of {len(truth)} training images ({fraction:.0%} of the other classes) "
        f"with a {trigger_size}x{trigger_size} trigger, relabelled {target}"
    )
    echo("training the clean classifier")
    Trainer(clean_task, cfg, folder / "clean").train()
    echo("training the poisoned classifier")
    Trainer(dirty_task, cfg, folder / "poisoned").train()

    val = clean_task.val_data
    others = val.labels != target
    triggered = stamp(val.images[others], trigger_size)
    report: dict[str, Any] = {"data": data, "poison": vars(poison_cfg), "steps": steps}
    for name, task in (("clean", clean_task), ("poisoned", dirty_task)):
        model = task.model
        acc = float((predict(model, val.images).argmax(1) == val.labels).float().mean())
        asr = float((predict(model, triggered).argmax(1) == target).float().mean())
        report[name] = {"clean_accuracy": acc, "attack_success_rate": asr}
        echo(f"{name:>9} model: clean accuracy {acc:.1%}, triggered images classified {target}: {asr:.1%}")
    feats = activations(dirty_task.model, dirty_task.train_data.images)
    labels = dirty_task.train_data.labels
    clusters = precision_recall(activation_clustering(feats, labels), truth)
    scores = spectral_scores(feats, labels)
    # Tran et al. remove the 1.5 eps n highest scores of a class; here eps is what the attacker used
    in_target = labels == target
    budget = int(truth.sum())
    order = torch.argsort(torch.where(in_target, scores, torch.full_like(scores, -1.0)), descending=True)
    flagged = torch.zeros_like(truth)
    flagged[order[:budget]] = True
    spectral = precision_recall(flagged, truth)
    report["detection"] = {"activation_clustering": clusters, "spectral_signature_top_k_in_target": spectral}
    echo(
        f"activation clustering: precision {clusters['precision']:.1%}, recall {clusters['recall']:.1%} "
        f"({clusters['flagged']} flagged, {clusters['poisoned']} poisoned)"
    )
    echo(
        f"spectral signature (top {budget} scores of class {target}): precision {spectral['precision']:.1%}, "
        f"recall {spectral['recall']:.1%}"
    )
    shown = torch.cat([val.images[others][:8], triggered[:8]])
    preds = predict(dirty_task.model, shown).argmax(1).tolist()
    captions = [f"clean: {p}" for p in preds[:8]] + [f"trigger: {p}" for p in preds[8:]]
    save_grid(folder / "backdoor.png", shown, captions, nrow=8)
    rundir.atomic_write_json(folder / "backdoor.json", report)
    echo(f"report {folder / 'backdoor.json'}, picture {folder / 'backdoor.png'}")


@defend.command("purify")
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
    import torch

    from genlab.adversarial.attacks import pgd
    from genlab.adversarial.evaluation import accuracy, spread
    from genlab.adversarial.purification import purify
    from genlab.classification.evaluate import load_classifier_run
    from genlab.data import save_grid
    from genlab.pipelines import DiffusionPipeline

    model, val, _ = load_classifier_run(classifier)
    pipe = DiffusionPipeline.from_pretrained(diffusion, device="cpu")
    if pipe.image_shape != (model.config.in_channels, model.config.image_size):
        raise GenlabError("the diffusion model and the classifier must work on images of the same shape")
    x, y = spread(val.images, val.labels, n, seed)
    adv = pgd(model, x, y, eps, attack_steps, generator=torch.Generator().manual_seed(seed))
    echo(
        f"no purification: clean {accuracy(model, x, y):.1%}, PGD-{attack_steps} at eps {eps}: "
        f"{accuracy(model, adv, y):.1%} ({len(x)} images)"
    )
    rows = [x[:8], adv[:8]]
    for s in number_list(strength, "--strength", float):
        g = torch.Generator().manual_seed(seed)
        clean_p = purify(pipe, x, s, steps, sampler, g)
        adv_p = purify(pipe, adv, s, steps, sampler, g)
        rows.append(adv_p[:8])
        echo(
            f"strength {s}: clean {accuracy(model, clean_p, y):.1%}, attacked {accuracy(model, adv_p, y):.1%}"
        )
    if out:
        echo(
            f"wrote {save_grid(out, torch.cat(rows), nrow=8)} (rows: clean, attacked, purified per strength)"
        )


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
    import torch

    from genlab.adversarial.attacks import fgsm, pgd
    from genlab.adversarial.detection import auroc, fit_detector
    from genlab.adversarial.evaluation import spread
    from genlab.classification.evaluate import load_classifier_run
    from genlab.data import load_splits
    from genlab.data.images import resize_batch

    model, val, _ = load_classifier_run(run)
    x, y = spread(val.images, val.labels, n, seed)
    half = len(x) // 2
    calib, test, y_test = x[:half], x[half:], y[half:]
    cfg = model.config
    sets: dict[str, torch.Tensor] = {}
    for e in number_list(eps, "--eps", float):
        sets[f"FGSM eps {e}"] = fgsm(model, test, y_test, e)
        sets[f"PGD-40 eps {e}"] = pgd(
            model, test, y_test, e, 40, generator=torch.Generator().manual_seed(seed)
        )
    for name in (s.strip() for s in ood.split(",") if s.strip()):
        if name == "noise":
            sets["uniform noise"] = torch.rand(
                len(test),
                cfg.in_channels,
                cfg.image_size,
                cfg.image_size,
                generator=torch.Generator().manual_seed(seed),
            )
            continue
        other, _ = load_splits(name, 0, 0.1, None)
        imgs = other.images[
            torch.randperm(len(other), generator=torch.Generator().manual_seed(seed))[: len(test)]
        ]
        if imgs.shape[1] != cfg.in_channels:
            imgs = imgs.mean(1, keepdim=True).expand(-1, cfg.in_channels, -1, -1)
        sets[f"{name} images"] = resize_batch(imgs, cfg.image_size)
    for score in ("squeeze", "msp"):
        det = fit_detector(model, calib, score, fpr)
        clean_scores = det.scores(model, test)
        reached = float((clean_scores > det.threshold).float().mean())
        label = "feature squeezing" if score == "squeeze" else "max softmax probability"
        echo(
            f"{label}: threshold {det.threshold:.4f}; false positives on {len(test)} other clean images: "
            f"{reached:.1%} (asked {fpr:.0%})"
        )
        for name, images in sets.items():
            s = det.scores(model, images)
            echo(
                f"  {name:>18}: {float((s > det.threshold).float().mean()):6.1%} flagged, "
                f"AUROC {auroc(clean_scores, s):.3f}"
            )
