"""`GANPipeline`: a trained GAN run as a callable, with the same call as the diffusion pipelines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genlab import rundir
from genlab.errors import GenlabError
from genlab.gan.models import GAN
from genlab.pipelines.diffusion import PipelineOutput, checked_class_names, class_index, tensor_to_pil
from genlab.train.distributed import pick_device


class GANPipeline:
    """``GANPipeline.from_pretrained(run)(num_images=16, class_labels=7)``: one generator pass, no steps."""

    def __init__(self, gan: GAN, class_names: list[str] | None = None):
        self.gan = gan.eval()
        self.class_names = checked_class_names(class_names, gan.config.num_classes)

    @classmethod
    def from_pretrained(
        cls, run_dir: str | Path, device: str | torch.device = "auto", use_ema: bool = True
    ) -> GANPipeline:
        config = rundir.read_config(run_dir, kind="gan")
        dev = pick_device(device) if isinstance(device, str) else device
        return cls(GAN.from_pretrained(run_dir, use_ema=use_ema, device=dev), config.get("class_names"))

    @property
    def num_classes(self) -> int:
        return self.gan.config.num_classes

    @property
    def network(self) -> torch.nn.Module:
        """The network called to make images (what evaluation counts calls of)."""
        return self.gan.generator

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.gan.config.in_channels, self.gan.config.image_size

    def class_index(self, name: str) -> int:
        """The class index of a class name (e.g. "7") or a number given as text."""
        return class_index(name, self.class_names, self.num_classes)

    @torch.no_grad()
    def __call__(
        self,
        num_images: int = 1,
        class_labels: int | list[int] | torch.Tensor | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        sampler: str | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        **_: Any,
    ) -> PipelineOutput:
        """``num_images`` images from z ~ N(0, I) (or the given ``latents``); a conditional GAN draws
        ``class_labels`` (one, or one per image, cycled; default: every class in turn). Steps, guidance and
        sampler do not apply to a GAN and are accepted only so the pipelines share one call."""
        if num_images < 1:
            raise GenlabError(f"num_images must be at least 1 (got {num_images})")
        labels = None
        if self.num_classes:
            if class_labels is None:
                class_labels = torch.arange(self.num_classes)
            labels = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1)
            if labels.numel() == 0 or labels.min() < 0 or labels.max() >= self.num_classes:
                raise GenlabError(f"class labels must lie in 0..{self.num_classes - 1}")
            labels = labels.repeat(-(-num_images // labels.numel()))[:num_images]
        elif class_labels is not None:
            raise GenlabError("this GAN is unconditional: it takes no class labels")
        z = self.gan.latents(num_images, generator) if latents is None else latents.to(self.gan.device)
        if z.shape != (num_images, self.gan.config.z_dim):
            raise GenlabError(
                f"latents must have shape ({num_images}, {self.gan.config.z_dim}), got {tuple(z.shape)}"
            )
        y = labels.to(self.gan.device) if labels is not None else None
        images = self.gan.generate(z, y).cpu()
        return PipelineOutput(tensor_to_pil(images), images, labels)
