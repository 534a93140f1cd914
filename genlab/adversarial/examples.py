"""Adversarial examples of image files, and inputs optimised toward a class, as captioned pictures
(`genlab attack image`, `genlab attack optimize`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from genlab.adversarial.attacks import fgsm, optimize_input, pgd
from genlab.adversarial.evaluation import class_index, magnify
from genlab.classification.evaluate import predict
from genlab.data import load_image, save_grid

IMAGE_ATTACKS = ("fgsm", "pgd", "pgd-l2")


def attack_files(
    model: nn.Module,
    names: list[str],
    paths: Sequence[str | Path],
    attack: str = "pgd",
    eps: float = 0.3,
    steps: int = 40,
    target: str | None = None,
    out: str | Path = "adversarial.png",
) -> tuple[Path, list[tuple[str, str]]]:
    """Attack the image files ``paths`` (read at the classifier's size and channels) with ``attack``
    (fgsm, pgd, or pgd-l2 of radius ``eps``), toward the class called ``target`` or any wrong class. Writes
    a grid to ``out``: the images, the adversarial images and their magnified perturbations, captioned with
    the predictions. Returns its path and each image's (clean, adversarial) predicted class."""
    cfg = model.config
    x = torch.stack([load_image(p, cfg.image_size, cfg.in_channels) for p in paths])
    clean = predict(model, x).argmax(1)
    if target is not None:
        y, targeted = torch.full((len(x),), class_index(names, target)), True
    else:
        y, targeted = clean, False
    if attack == "fgsm":
        adv = fgsm(model, x, y, eps, targeted)
    else:
        adv = pgd(model, x, y, eps, steps, norm="l2" if attack == "pgd-l2" else "linf", targeted=targeted)
    probs = predict(model, adv)
    grid = torch.cat([x, adv, magnify(adv - x)[0]])
    captions = [f"clean: {names[k]}" for k in clean.tolist()]
    captions += [f"{attack}: {names[k]} ({probs[i, k]:.0%})" for i, k in enumerate(probs.argmax(1).tolist())]
    captions += ["perturbation (magnified)"] * len(x)
    path = save_grid(out, grid, captions, nrow=len(x))
    pairs = [(names[a], names[b]) for a, b in zip(clean.tolist(), probs.argmax(1).tolist(), strict=True)]
    return path, pairs


def optimized_examples(
    model: nn.Module,
    names: list[str],
    target: str,
    source: str | Path | None = None,
    lam: float = 0.0,
    steps: int = 200,
    n: int = 8,
    seed: int = 0,
    out: str | Path = "optimized.png",
) -> Path:
    """Inputs optimised toward the class called ``target`` (optimize_input): ``n`` from noise, what the
    network thinks the class looks like, or one from the image file ``source`` held close to it by
    lambda ||x - x_source||^2 (a targeted adversarial example). Writes them, captioned with the
    predictions, to ``out`` and returns its path."""
    k = class_index(names, target)
    cfg = model.config
    src = load_image(source, cfg.image_size, cfg.in_channels)[None] if source else None
    y = torch.full((1 if src is not None else n,), k)
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
        f"{names[i]} ({probs[j, i]:.0%})" for j, i in enumerate(probs.argmax(1).tolist())
    ]
    return save_grid(out, images, captions)
