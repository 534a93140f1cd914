"""Backdoor poisoning and its detection.

The attack (Gu et al. 2017, "BadNets"): stamp a small trigger on a fraction of the training images and
relabel them as the target class; the trained classifier behaves normally on clean images and answers the
target whenever the trigger is present. The defenses read the poisoned model's penultimate activations of
the training images it was given: activation clustering (Chen et al. 2018: per class, two-means on the
activations reduced by PCA; the smaller cluster is flagged when it is small) and the spectral signature
(Tran et al. 2018: per class, the squared projection on the top singular vector of the centred activations).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from genlab.classification.task import ClassifierDataConfig, ClassifierTask
from genlab.data import ImageDataset
from genlab.data.kmeans import kmeans
from genlab.errors import GenlabError
from genlab.nn.classifier import ClassifierConfig
from genlab.nn.pretrained import config_from_dict


@dataclass
class PoisonConfig:
    """What the attacker does; stored as config.json's ``poison`` so the run says what it learned from."""

    fraction: float = 0.05  # of the training images of other classes, stamped and relabelled
    target: int = 0
    size: int = 4  # side of the checkerboard trigger, in the bottom-right corner
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.fraction < 1:
            raise GenlabError(f"`fraction` must lie in (0, 1) (got {self.fraction})")
        if self.size < 1:
            raise GenlabError(f"`size` must be at least 1 (got {self.size})")


def stamp(images: torch.Tensor, size: int) -> torch.Tensor:
    """The trigger: a ``size`` x ``size`` black-and-white checkerboard one pixel in from the bottom-right."""
    out = images.clone()
    _, _, h, w = images.shape
    if size + 1 > min(h, w):
        raise GenlabError(f"a {size}-pixel trigger does not fit {h}x{w} images")
    board = ((torch.arange(size)[:, None] + torch.arange(size)[None]) % 2).to(images)
    out[:, :, h - 1 - size : h - 1, w - 1 - size : w - 1] = board
    return out


def poison(data: ImageDataset, cfg: PoisonConfig) -> tuple[ImageDataset, torch.Tensor]:
    """(the poisoned copy of ``data``, a boolean mask of the poisoned images)."""
    if data.labels is None:
        raise GenlabError(f"{data.name} has no labels to poison")
    if not 0 <= cfg.target < data.num_classes:
        raise GenlabError(f"`target` must lie in 0..{data.num_classes - 1} (got {cfg.target})")
    candidates = (data.labels != cfg.target).nonzero().flatten()
    g = torch.Generator().manual_seed(cfg.seed)
    count = max(1, round(cfg.fraction * len(candidates)))
    chosen = candidates[torch.randperm(len(candidates), generator=g)[:count]]
    mask = torch.zeros(len(data), dtype=torch.bool)
    mask[chosen] = True
    images, labels = data.images.clone(), data.labels.clone()
    images[mask] = stamp(images[mask], cfg.size)
    labels[mask] = cfg.target
    return replace(data, images=images, labels=labels), mask


class PoisonedClassifierTask(ClassifierTask):
    """A classifier trained on a poisoned copy of its training split (validation stays clean)."""

    def __init__(
        self,
        data: ClassifierDataConfig,
        poison_cfg: PoisonConfig,
        model_config: ClassifierConfig | None = None,
        **options: Any,
    ):
        super().__init__(data, model_config, **options)
        self.poison = poison_cfg
        self.train_data, self.poisoned = poison(self.train_data, poison_cfg)

    @classmethod
    def from_run_config(cls, config: dict[str, Any]) -> PoisonedClassifierTask:
        return cls(
            config_from_dict(ClassifierDataConfig, config.get("data", {}), "config.json 'data'"),
            config_from_dict(PoisonConfig, config["poison"], "config.json 'poison'"),
            model_config=config_from_dict(ClassifierConfig, config["model"], "config.json 'model'"),
        )

    def config_sections(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**super().config_sections(), "poison": asdict(self.poison)}


@torch.no_grad()
def activations(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Penultimate activations in eval mode (mode restored)."""
    was = model.training
    model.eval()
    try:
        return torch.cat(
            [model.features(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        )
    finally:
        model.train(was)


def _two_means(x: torch.Tensor) -> torch.Tensor:
    """k-means with k = 2 from a farthest-point start (deterministic): the cluster index of each row."""
    first = x[0]
    second = x[(x - first).norm(dim=1).argmax()]
    start = torch.stack([first, x[(x - second).norm(dim=1).argmax()]])
    return kmeans(x, 2, init=start)[1]


def activation_clustering(
    features: torch.Tensor, labels: torch.Tensor, dims: int = 10, max_share: float = 0.35
) -> torch.Tensor:
    """Chen et al. 2018: per class, project the centred activations on their top ``dims`` principal
    components, split them in two by k-means, and flag the smaller cluster when it holds at most
    ``max_share`` of the class (a clean class splits evenly or not at all; a poisoned one has a small,
    distinct cluster of relabelled images). Returns a boolean mask over the samples."""
    flagged = torch.zeros(len(labels), dtype=torch.bool)
    for k in labels.unique().tolist():
        idx = (labels == k).nonzero().flatten()
        if len(idx) < 4:
            continue
        x = features[idx] - features[idx].mean(0)
        _, _, v = torch.linalg.svd(x, full_matrices=False)
        assign = _two_means(x @ v[:dims].T)
        small = int(assign.bincount(minlength=2).argmin())
        if (assign == small).float().mean() <= max_share:
            flagged[idx[assign == small]] = True
    return flagged


def spectral_scores(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Tran et al. 2018: per class, the squared projection of each centred activation on the top right
    singular vector; poisoned samples score high."""
    scores = torch.zeros(len(labels))
    for k in labels.unique().tolist():
        idx = (labels == k).nonzero().flatten()
        x = features[idx] - features[idx].mean(0)
        _, _, v = torch.linalg.svd(x, full_matrices=False)
        scores[idx] = (x @ v[0]) ** 2
    return scores


def precision_recall(flagged: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    tp = float((flagged & truth).sum())
    return {
        "precision": tp / max(1.0, float(flagged.sum())),
        "recall": tp / max(1.0, float(truth.sum())),
        "flagged": int(flagged.sum()),
        "poisoned": int(truth.sum()),
    }
