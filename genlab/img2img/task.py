"""The segmentation paper's U-Net family used image to image, the lectures' other U-Net uses:
super-resolution (the image made ``factor`` times smaller, enlarged back bicubically, then sharpened) and
denoising (Gaussian noise of standard deviation ``noise`` removed). The network predicts the correction
to its degraded input (residual learning, Kim et al. 2016, VDSR), from the input mirrored around the
image as in overlap-tile prediction, under the mean squared error."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data import DataConfig, load_splits, save_grid
from genlab.data.images import resize_batch
from genlab.errors import GenlabError
from genlab.metrics.reconstruction import psnr
from genlab.nn.pretrained import config_from_dict
from genlab.nn.seg_unet import SegUNet, SegUNetConfig
from genlab.segmentation.tiling import with_context
from genlab.train.engine import Batch, Task

TASKS = ("superres", "denoise")


class RestorationUNet(SegUNet):
    """The segmentation U-Net with image outputs, saved as an ``img2img`` run."""

    kind = "img2img"


# The restoration U-Net measured on 2 CPU cores (README): the task's default and `genlab train img2img`'s.
IMG2IMG_MODEL: dict[str, Any] = dict(base_channels=16, depth=2)


@dataclass
class RestorationConfig:
    """What is undone; stored as config.json's ``restoration``."""

    task: str = "superres"
    factor: int = 2  # super-resolution: 2 or 4
    noise: float = 0.3  # denoising: the noise's standard deviation on [0, 1] images

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise GenlabError(f"`task` must be one of {', '.join(TASKS)} (got {self.task})")
        if self.factor not in (2, 4) or self.noise <= 0:
            raise GenlabError("`factor` must be 2 or 4 and `noise` positive")


def degrade(
    images: torch.Tensor, cfg: RestorationConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """What the model is given for clean ``images`` in [0, 1]."""
    if cfg.task == "superres":
        return enlarge(resize_batch(images, images.shape[-1] // cfg.factor), images.shape[-1])
    return images + cfg.noise * torch.randn(images.shape, generator=generator).to(images)


def enlarge(small: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic enlargement to ``size``, kept in [0, 1]: the baseline a super-resolution model improves on."""
    return F.interpolate(small, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


class Img2ImgTask(Task):
    kind = "img2img"

    def __init__(
        self,
        data: DataConfig,
        restoration: RestorationConfig,
        model_config: SegUNetConfig | None = None,
        **model_options: Any,
    ):
        self.data, self.restoration = data, restoration
        self.train_data, self.val_data = load_splits(
            data.name, data.split_seed, data.val_fraction, data.image_size
        )
        channels, side = self.train_data.images.shape[1], self.train_data.images.shape[2]
        if restoration.task == "superres" and side % restoration.factor:
            raise GenlabError(
                f"`factor` {restoration.factor} needs an image side divisible by it (got {side})"
            )
        self.model = RestorationUNet(
            model_config
            or SegUNetConfig(
                in_channels=channels, out_channels=channels, **{**IMG2IMG_MODEL, **model_options}
            )
        )

    @classmethod
    def from_run_config(cls, config: dict[str, Any]) -> Img2ImgTask:
        return cls(
            config_from_dict(DataConfig, config.get("data", {}), "config.json 'data'"),
            config_from_dict(RestorationConfig, config.get("restoration", {}), "config.json 'restoration'"),
            model_config=config_from_dict(SegUNetConfig, config["model"], "config.json 'model'"),
        )

    def config_sections(self) -> dict[str, Any]:
        return {"data": asdict(self.data), "restoration": asdict(self.restoration)}

    def loss(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        clean = batch.images
        restored = restore(model, degrade(clean, self.restoration, generator))
        return F.mse_loss(restored, clean), {}

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """PSNR of the restored validation images, and of their degraded inputs (the baseline)."""
        clean = self.val_data.images[:500]
        degraded = degrade(clean, self.restoration, torch.Generator().manual_seed(0))
        device = next(model.parameters()).device
        restored = torch.cat([restore(model, d.to(device)).cpu() for d in degraded.split(100)])
        return {
            "val_psnr": psnr(restored.clamp(0, 1), clean),
            "val_psnr_input": psnr(degraded.clamp(0, 1), clean),
        }

    @torch.no_grad()
    def sample(self, model: nn.Module, path: Path) -> Path:
        """Eight validation images: degraded (top), restored (middle), clean (bottom)."""
        clean = self.val_data.images[torch.linspace(0, len(self.val_data) - 1, 8).long()]
        degraded = degrade(clean, self.restoration, torch.Generator().manual_seed(0)).clamp(0, 1)
        restored = restore(model, degraded.to(next(model.parameters()).device)).cpu().clamp(0, 1)
        return save_grid(path, torch.cat([degraded, restored, clean]), nrow=8)


def restore(model: nn.Module, degraded: torch.Tensor) -> torch.Tensor:
    """The model's restoration of ``degraded`` (N, C, H, W): its input plus the predicted correction."""
    correction = model(with_context(degraded, model.config.depth))
    return degraded + correction[..., : degraded.shape[-2], : degraded.shape[-1]]
