"""The backdoor experiment end to end (`genlab defend backdoor-demo`): poison a fraction of the training
images (Gu et al. 2017, "BadNets"), train a clean and a poisoned classifier with the same recipe, measure
both (clean accuracy, attack success rate), and ask the detectors of genlab.adversarial.backdoor which
training images were poisoned (activation clustering, Chen et al. 2018; the spectral signature, Tran et al.
2018)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

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
from genlab.data import ImageDataset, save_grid
from genlab.errors import GenlabError
from genlab.recipes import CLASSIFIER_DEFAULTS
from genlab.train import TrainConfig, Trainer, seed_step


def backdoor_recipe(steps: int, seed: int, progress: bool = True) -> TrainConfig:
    """The recipe both classifiers train with: `genlab train classifier`'s, for ``steps`` steps, with no
    sample pictures and no checkpoints on the way."""
    recipe = {
        **CLASSIFIER_DEFAULTS,
        "steps": steps,
        "seed": seed,
        "progress": progress,
        "sample_every": 0,
        "checkpoint_every": 0,
    }
    return TrainConfig(**{k: v for k, v in recipe.items() if k in TrainConfig.__dataclass_fields__})


def backdoor_success(model: nn.Module, val: ImageDataset, target: int, size: int) -> dict[str, float]:
    """Clean accuracy on ``val``, and the attack success rate: the share of its images of other classes
    that, stamped with the ``size``-pixel trigger, are classified as ``target``."""
    triggered = stamp(val.images[val.labels != target], size)
    return {
        "clean_accuracy": float((predict(model, val.images).argmax(1) == val.labels).float().mean()),
        "attack_success_rate": float((predict(model, triggered).argmax(1) == target).float().mean()),
    }


def spectral_top_k(scores: torch.Tensor, labels: torch.Tensor, target: int, k: int) -> torch.Tensor:
    """The ``k`` highest spectral scores among the images labelled ``target``, as a boolean mask.

    Tran et al. remove the 1.5 eps n highest scores of a class; here the class is the target and k the
    number of images the attacker poisoned, so precision and recall show the score at its best."""
    in_target = torch.where(labels == target, scores, torch.full_like(scores, -1.0))
    flagged = torch.zeros(len(scores), dtype=torch.bool)
    flagged[torch.argsort(in_target, descending=True)[:k]] = True
    return flagged


def detect_poison(
    model: nn.Module, train: ImageDataset, truth: torch.Tensor, target: int
) -> dict[str, dict[str, float]]:
    """Precision and recall against ``truth`` (the poisoned images) of activation clustering and of the
    spectral signature, both on ``model``'s penultimate activations of its training images ``train``."""
    feats = activations(model, train.images)
    clusters = activation_clustering(feats, train.labels)
    flagged = spectral_top_k(spectral_scores(feats, train.labels), train.labels, target, int(truth.sum()))
    return {
        "activation_clustering": precision_recall(clusters, truth),
        "spectral_signature_top_k_in_target": precision_recall(flagged, truth),
    }


def backdoor_picture(model: nn.Module, val: ImageDataset, target: int, size: int, path: str | Path) -> Path:
    """Eight held-out images of other classes, clean and triggered, captioned with ``model``'s answers."""
    others = val.images[val.labels != target]
    shown = torch.cat([others[:8], stamp(others, size)[:8]])
    preds = predict(model, shown).argmax(1).tolist()
    captions = [f"clean: {p}" for p in preds[:8]] + [f"trigger: {p}" for p in preds[8:]]
    return save_grid(path, shown, captions, nrow=8)


def backdoor_demo(
    data: str,
    out: str | Path,
    poison: PoisonConfig,
    steps: int = 800,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train a clean classifier of ``data`` in ``out/clean`` and one on ``poison``ed training images in
    ``out/poisoned`` (same recipe, ``steps`` steps, seeded by ``poison.seed``), measure both and run the
    detectors on the poisoned one. Writes ``out/backdoor.json`` (the report returned) and
    ``out/backdoor.png``."""
    folder = Path(out)
    if folder.exists() and any(folder.iterdir()):
        raise GenlabError(f"{folder} already exists and is not empty; choose another `out`")
    data_cfg = ClassifierDataConfig(name=data)
    cfg = backdoor_recipe(steps, poison.seed, progress)
    seed_step(poison.seed, -1)
    clean_task = ClassifierTask(data_cfg)
    seed_step(poison.seed, -1)
    dirty_task = PoisonedClassifierTask(data_cfg, poison)
    truth = dirty_task.poisoned
    log(
        f"poisoned {int(truth.sum())} of {len(truth)} training images ({poison.fraction:.0%} of the other "
        f"classes) with a {poison.size}x{poison.size} trigger, relabelled {poison.target}"
    )
    log("training the clean classifier")
    Trainer(clean_task, cfg, folder / "clean").train()
    log("training the poisoned classifier")
    Trainer(dirty_task, cfg, folder / "poisoned").train()

    val = clean_task.val_data
    report: dict[str, Any] = {"data": data, "poison": vars(poison), "steps": steps}
    for name, task in (("clean", clean_task), ("poisoned", dirty_task)):
        report[name] = success = backdoor_success(task.model, val, poison.target, poison.size)
        log(
            f"{name:>9} model: clean accuracy {success['clean_accuracy']:.1%}, triggered images classified "
            f"{poison.target}: {success['attack_success_rate']:.1%}"
        )
    report["detection"] = detect_poison(dirty_task.model, dirty_task.train_data, truth, poison.target)
    clusters = report["detection"]["activation_clustering"]
    spectral = report["detection"]["spectral_signature_top_k_in_target"]
    log(
        f"activation clustering: precision {clusters['precision']:.1%}, recall {clusters['recall']:.1%} "
        f"({clusters['flagged']} flagged, {clusters['poisoned']} poisoned)"
    )
    log(
        f"spectral signature (top {int(truth.sum())} scores of class {poison.target}): precision "
        f"{spectral['precision']:.1%}, recall {spectral['recall']:.1%}"
    )
    backdoor_picture(dirty_task.model, val, poison.target, poison.size, folder / "backdoor.png")
    rundir.atomic_write_json(folder / "backdoor.json", report)
    return report
