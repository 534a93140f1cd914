"""The features FVD reads clips with: a clip classifier of the data set (genlab.nn.video_classifier),
trained on its clips' labels once and cached beside the image feature extractors.

Cache: ``$GENLAB_CACHE`` or ``~/.cache/genlab``, ``video-classifiers/NAME-HASH``, the hash of the training
clips, labels, split and recipe, as genlab.evaluation.features.dataset_extractor names its entries.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab import rundir
from genlab.classification.evaluate import evaluate_classifier, predict
from genlab.data import DataConfig, load_clips
from genlab.data.moving import ClipDataset
from genlab.errors import GenlabError
from genlab.evaluation.features import cache_root, digest
from genlab.nn.pretrained import config_from_dict
from genlab.nn.video_classifier import VideoClassifier, VideoClassifierConfig
from genlab.train.engine import Batch, Task

# How the clip classifier of a data set is trained: 300 steps of 64 clips reach 99.8% on the held-out
# moving-shapes directions (80.5% on moving-mnist's digits) in 146 CPU seconds (docs/video.md). Part of the
# cache key, so changing it retrains.
VIDEO_CLASSIFIER_RECIPE = dict(
    steps=300, batch_size=64, lr=3e-3, warmup_steps=30, ema_decay=0.0, seed=0, widths=(16, 32, 64),
    time_strides=(1, 1, 2),
)  # fmt: skip


class VideoClassifierTask(Task):
    """Cross-entropy of a VideoClassifier on a clip data set's labels; accuracy on its validation clips."""

    kind = "video-classifier"

    def __init__(
        self,
        data: DataConfig,
        splits: tuple[ClipDataset, ClipDataset] | None = None,
        model_config: VideoClassifierConfig | None = None,
        **model_options: Any,
    ):
        """``splits``: the (train, val) clips of ``data`` when the caller has them loaded already;
        ``model_config`` rebuilds a saved model, else ``model_options`` (widths, time_strides) shape one."""
        self.data = data
        if splits is None:
            splits = tuple(
                load_clips(data.name, s, data.split_seed, data.val_fraction) for s in ("train", "val")
            )
        self.train_data, self.val_data = splits
        if self.train_data.labels is None:
            raise GenlabError(f"clip data set {data.name} has no labels to train a clip classifier on")
        if model_config is None:
            x = self.train_data.clips
            model_config = VideoClassifierConfig(
                in_channels=x.shape[2],
                image_size=x.shape[3],
                frames=x.shape[1],
                num_classes=self.train_data.num_classes,
                mean=tuple(x.mean(dim=(0, 1, 3, 4)).tolist()),
                std=tuple(x.std(dim=(0, 1, 3, 4)).clamp_min(1e-3).tolist()),
                class_names=tuple(self.train_data.class_names or ()),
                **model_options,
            )
        self.model = VideoClassifier(model_config)

    @classmethod
    def from_run_config(cls, config: dict[str, Any]) -> VideoClassifierTask:
        data = config_from_dict(DataConfig, config.get("data", {}), "config.json 'data'")
        model = config_from_dict(VideoClassifierConfig, config["model"], "config.json 'model'")
        return cls(data, model_config=model)

    def config_sections(self) -> dict[str, Any]:
        return {"data": asdict(self.data)}

    def loss(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        logits = model(batch.images)
        loss = F.cross_entropy(logits, batch.labels)
        return loss, {"train_acc": (logits.argmax(1) == batch.labels).float().mean().detach()}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        m = evaluate_classifier(model, self.val_data, batch_size=200)
        return {"val_acc": m["accuracy"], "val_loss": m["loss"]}


@dataclass
class ClipFeatures:
    """A clip classifier as FVD's feature extractor: clips (N, T, C, H, W) in [0, 1] to features (N, D)."""

    name: str  # shown beside FVD
    key: str  # content hash of the weights
    model: VideoClassifier = field(repr=False)
    val_accuracy: float | None = None
    run: str | None = None

    @torch.no_grad()
    def __call__(self, clips: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
        """Features of ``clips``, float64 on the CPU."""
        self.model.eval()
        device = next(self.model.parameters()).device
        return torch.cat([self.model.features(b.to(device)).double().cpu() for b in clips.split(batch_size)])

    def classify(self, clips: torch.Tensor) -> torch.Tensor:
        """(N,) the class the classifier reads in each clip."""
        return predict(self.model, clips, batch_size=100).argmax(1)


def video_extractor(
    data: DataConfig,
    cache: str | Path | None = None,
    recipe: dict | None = None,
    splits: tuple[ClipDataset, ClipDataset] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> ClipFeatures:
    """The clip classifier of ``data`` (a clip data set), trained on its training clips once, then cached.

    As dataset_extractor: the entry is named after a hash of the training clips, labels, ``data`` and
    ``recipe`` (default VIDEO_CLASSIFIER_RECIPE), trained into a temporary folder and renamed into place.
    ``splits``: its (train, val) clips, when the caller has them loaded."""
    from genlab.train import TrainConfig, Trainer, seed_step

    recipe = dict(VIDEO_CLASSIFIER_RECIPE if recipe is None else recipe)
    if splits is None:
        splits = tuple(load_clips(data.name, s, data.split_seed, data.val_fraction) for s in ("train", "val"))
    train = splits[0]
    if train.labels is None:
        raise GenlabError(f"clip data set {data.name} has no labels to train a clip classifier on")
    key = digest(train.clips, train.labels, repr(sorted(recipe.items())), repr(asdict(data)))
    slug = "".join(ch if ch.isalnum() else "-" for ch in data.name)[:40]
    final = Path(cache or cache_root()) / "video-classifiers" / f"{slug}-{key[:16]}"
    if not (final / "config.json").is_file():
        log(f"training a clip classifier for {data.name} (once; cached in {final})")
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        options = {k: tuple(recipe.pop(k)) for k in ("widths", "time_strides") if k in recipe}
        seed_step(recipe["seed"], -1)
        task = VideoClassifierTask(data, splits, **options)
        cfg = TrainConfig(
            **recipe, eval_every=0, sample_every=0, checkpoint_every=0, device="cpu", progress=progress
        )
        Trainer(task, cfg, tmp, local=True).train()
        try:
            os.replace(tmp, final)
        except OSError:  # another process cached it first: the same recipe on the same clips
            shutil.rmtree(tmp, ignore_errors=True)
    model = VideoClassifier.from_pretrained(final)
    scores = [r["val_acc"] for r in rundir.read_metrics(final) if r.get("event") == "eval" and "val_acc" in r]
    acc = scores[-1] if scores else None
    shown = f", validation accuracy {acc:.1%}" if acc is not None else ""
    return ClipFeatures(
        name=f"genlab {data.name} clip classifier, pooled 3-D conv features "
        f"({model.config.widths[-1]} dims{shown})",
        key=hashlib.sha256((final / rundir.MODEL_FILE).read_bytes()).hexdigest(),
        model=model,
        val_accuracy=acc,
        run=str(final),
    )
