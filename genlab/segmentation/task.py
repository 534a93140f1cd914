"""Training the segmentation U-Net on the shared engine (Ronneberger et al. 2015): pixel-wise softmax
cross-entropy weighted by the paper's weight map (eq. 1-2), elastic deformations of every training image,
and every image predicted whole from its mirrored surroundings, as the overlap-tile strategy does."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genlab.checks import MAX_SIDE, check_pixels, check_range
from genlab.data import save_grid
from genlab.data.base import ImageDataset
from genlab.errors import GenlabError
from genlab.nn.pretrained import config_from_dict
from genlab.nn.seg_unet import SegUNet, SegUNetConfig
from genlab.segmentation.augment import elastic_deform
from genlab.segmentation.cells import CellsConfig, make_cells, semantic_target, separated_pairs
from genlab.segmentation.tiling import with_context
from genlab.segmentation.weights import class_balance, unet_weight_map
from genlab.train.engine import Batch, Task

# The segmenter measured on 2 CPU cores (README, Segmentation): narrower and one pooling shallower than
# the paper's 64 channels and 4 poolings (SegUNetConfig's defaults are the paper's depth). The task's
# default, and `genlab train segmenter`'s (tests/test_defaults.py holds the two together).
SEGMENTER_MODEL: dict[str, Any] = dict(base_channels=16, depth=3)


@dataclass
class SegmentationConfig:
    """Data and loss of a segmentation run; stored as config.json's ``segmentation``."""

    train_images: int = 240
    val_images: int = 40
    seed: int = 0  # of the procedural cells (validation images use seed + 1)
    size: int = 96
    w0: float = 10.0  # weight of the border term; 0: class balance only (no separation weights)
    sigma: float = 5.0
    elastic: bool = True
    elastic_sigma: float = 10.0  # pixels, the paper's displacement spread on a 3x3 grid

    @property
    def name(self) -> str:
        return "cells"

    def __post_init__(self) -> None:
        if self.train_images < 1 or self.val_images < 1 or self.w0 < 0 or self.sigma <= 0:
            raise GenlabError("cells: at least one training and one validation image, w0 >= 0, sigma > 0")
        check_range("size", self.size, 16, MAX_SIDE)
        check_pixels(self.train_images + self.val_images, 1, self.size)


def overlay(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """An RGB picture of a gray ``image`` (1, H, W) with the predicted cells (H, W) tinted green."""
    rgb = image.expand(3, -1, -1).clone()
    cells = mask.bool()
    rgb[0][cells] *= 0.5
    rgb[1][cells] = 0.5 + 0.5 * rgb[1][cells]
    rgb[2][cells] *= 0.5
    return rgb


def _segmentation_dataset(name: str, images: torch.Tensor) -> ImageDataset:
    n = len(images)
    return ImageDataset(name, images, [""] * n, None, None, [{} for _ in range(n)])


class SegmenterTask(Task):
    kind = "segmenter"

    def __init__(
        self, seg: SegmentationConfig, model_config: SegUNetConfig | None = None, **model_options: Any
    ):
        self.seg = seg
        cfg = CellsConfig(size=seg.size)
        train_x, self.train_instances = make_cells(seg.train_images, seg.seed, cfg)
        val_x, self.val_instances = make_cells(seg.val_images, seg.seed + 1, cfg)
        self.train_data = _segmentation_dataset("cells", train_x)
        self.val_data = _segmentation_dataset("cells-val", val_x)
        options = {**SEGMENTER_MODEL, **model_options}
        self.model = SegUNet(model_config or SegUNetConfig(in_channels=1, num_classes=2, **options))

    @property
    def data(self) -> SegmentationConfig:
        return self.seg

    @classmethod
    def from_run_config(cls, config: dict[str, Any]) -> SegmenterTask:
        return cls(
            config_from_dict(
                SegmentationConfig, config.get("segmentation", {}), "config.json 'segmentation'"
            ),
            model_config=config_from_dict(SegUNetConfig, config["model"], "config.json 'model'"),
        )

    def config_sections(self) -> dict[str, Any]:
        return {"segmentation": asdict(self.seg)}

    def _context(self, images: torch.Tensor) -> torch.Tensor:
        """Images mirrored out to the network's input window: its output covers the whole image."""
        return with_context(images, self.model.config.depth)

    def _targets(
        self, images: torch.Tensor, instances: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images, class targets, weights), elastically deformed when training."""
        xs, ts, ws = [], [], []
        for x, inst in zip(images, instances, strict=True):
            if generator is not None and self.seg.elastic:
                x, inst = elastic_deform(x, inst[None], sigma=self.seg.elastic_sigma, generator=generator)
                inst = inst[0]
            target = semantic_target(inst.numpy())
            if self.seg.w0 > 0:
                weight = unet_weight_map(inst.numpy(), target, self.seg.w0, self.seg.sigma)
            else:
                weight = class_balance(target).astype(np.float32)
            xs.append(x)
            ts.append(torch.from_numpy(target))
            ws.append(torch.from_numpy(weight))
        return torch.stack(xs), torch.stack(ts), torch.stack(ws)

    def loss(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """Eq. 1: the softmax cross-entropy of every pixel, weighted by w(x), averaged."""
        images, target, weight = self._targets(
            batch.images.cpu(), self.train_instances[batch.indices.cpu()], generator
        )
        device = batch.images.device
        logits = model(self._context(images.to(device)))[..., : self.seg.size, : self.seg.size]
        ce = F.cross_entropy(logits, target.to(device), reduction="none")
        return (weight.to(device) * ce).mean(), {}

    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Cell masks (N, H, W) for images (N, 1, H, W) of the training size."""
        device = next(model.parameters()).device
        out = []
        for i in range(0, len(images), 16):
            logits = model(self._context(images[i : i + 16].to(device)))[
                ..., : self.seg.size, : self.seg.size
            ]
            out.append(logits.argmax(1).cpu())
        return torch.cat(out)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """On the validation cells: IoU of the cell class, pixel accuracy, and the share of touching
        pairs of cells that the prediction separates."""
        return score_segmentation(self.predict(model, self.val_data.images), self.val_instances)

    def sample(self, model: nn.Module, path: Path) -> Path:
        """Eight validation images: the image, the prediction over it, the target."""
        images, instances = self.val_data.images[:8], self.val_instances[:8]
        masks = self.predict(model, images)
        targets = torch.stack([torch.from_numpy(semantic_target(i.numpy())) for i in instances])
        rows = [images.expand(-1, 3, -1, -1)]
        rows.append(torch.stack([overlay(x, m) for x, m in zip(images, masks, strict=True)]))
        rows.append(targets[:, None].float().expand(-1, 3, -1, -1))
        return save_grid(path, torch.cat(rows), nrow=8)


def score_segmentation(masks: torch.Tensor, instances: torch.Tensor) -> dict[str, float]:
    """IoU of the cell class, pixel accuracy and separated touching pairs of predicted ``masks``."""
    targets = torch.stack([torch.from_numpy(semantic_target(i.numpy())) for i in instances])
    pred, true = masks.bool(), targets.bool()
    iou = float((pred & true).sum() / (pred | true).sum().clamp_min(1))
    good = total = 0
    for m, inst in zip(masks, instances, strict=True):
        g, t = separated_pairs(inst.numpy(), m.numpy())
        good, total = good + g, total + t
    return {
        "val_iou": iou,
        "val_pixel_accuracy": float((pred == true).float().mean()),
        "val_separated": good / max(total, 1),
        "val_touching_pairs": float(total),
    }
