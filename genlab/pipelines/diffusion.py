"""`DiffusionPipeline`: a trained diffusion run as a callable, in the manner of diffusers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from genlab.diffusion.config import DiffusionConfig
from genlab.diffusion.generate import generate, step_recorder
from genlab.diffusion.guides import ClassifierGuide
from genlab.diffusion.networks import image_shape, load_network, num_classes, sample_shape
from genlab.errors import GenlabError
from genlab.nn.precision import check_precision
from genlab.train.distributed import pick_device


@dataclass
class PipelineOutput:
    images: list[Image.Image]  # what diffusers returns
    tensors: torch.Tensor  # (N, C, H, W) in [0, 1]
    class_labels: torch.Tensor | None = None
    trajectory: list[torch.Tensor] | None = None  # x_t in [0, 1] after each step, from noise to image


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    arrays = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a[..., 0] if a.shape[-1] == 1 else a)) for a in arrays]


def class_index(name: str, class_names: list[str] | None, num_classes: int) -> int:
    """The index of class ``name`` among ``class_names``, or ``name`` read as a number; the range is
    checked where the labels are used."""
    if class_names and name in class_names:
        return class_names.index(name)
    try:
        return int(name)
    except ValueError:
        known = ", ".join(class_names or []) or f"0..{num_classes - 1}"
        raise GenlabError(f"unknown class '{name}'; this model knows {known}") from None


def checked_class_names(class_names: list[str] | None, num_classes: int) -> list[str] | None:
    """A run's ``class_names``, refused when a class-conditional model has another number of classes:
    names are looked up by class index, and a short list read from a damaged config.json would fail
    there (an unconditional model keeps its data's names, unused)."""
    if num_classes and class_names is not None and len(class_names) != num_classes:
        raise GenlabError(
            f"config.json's class_names names {len(class_names)} classes but the model has {num_classes}; "
            "the run directory is damaged"
        )
    return class_names


class DiffusionPipeline:
    """``DiffusionPipeline.from_pretrained(run)(num_images=16, class_labels=7, num_inference_steps=20)``."""

    def __init__(
        self,
        unet: nn.Module,
        diffusion: DiffusionConfig,
        class_names: list[str] | None = None,
        precision: str = "auto",
    ):
        self.unet, self.diffusion = unet.eval(), diffusion
        self.schedule = diffusion.noise_schedule()
        self.class_names = checked_class_names(class_names, num_classes(unet))
        self.precision = check_precision(precision)  # of the network's forward passes (genlab.nn.precision)

    @classmethod
    def from_pretrained(
        cls,
        run_dir: str | Path,
        device: str | torch.device = "auto",
        use_ema: bool = True,
        precision: str = "auto",
    ) -> DiffusionPipeline:
        """The run's EMA (or raw) weights on ``device``; ``precision`` "auto" samples with bfloat16 matrix
        products where the device is faster at them, "fp32" never."""
        dev = pick_device(device) if isinstance(device, str) else device
        network, diffusion, config = load_network(run_dir, use_ema=use_ema, device=dev)
        if diffusion.cond == "text":
            raise GenlabError(
                f'{run_dir} is a text-to-image run: use TextToImagePipeline, or genlab sample RUN "a prompt"'
            )
        return cls(network, diffusion, config.get("class_names"), precision)

    def to(self, device: str | torch.device) -> DiffusionPipeline:
        self.unet.to(device)
        return self

    @property
    def num_classes(self) -> int:
        return num_classes(self.unet)

    @property
    def network(self) -> nn.Module:
        """The network called at every denoising step (what evaluation counts calls of)."""
        return self.unet

    @property
    def image_shape(self) -> tuple[int, int]:
        """(channels, side) of the images made."""
        return image_shape(self.unet)

    @property
    def upscale(self) -> int:
        """How many times an upscaler enlarges (0: not an upscaler)."""
        return self.diffusion.upscale

    def _check_lowres(self, lowres: torch.Tensor | None, n: int) -> torch.Tensor | None:
        channels, side = self.image_shape
        if not self.upscale:
            if lowres is not None:
                raise GenlabError("this model is not an upscaler (trained without `upscale`): drop `lowres`")
            return None
        small = side // self.upscale
        if lowres is None:
            raise GenlabError(
                f"this model upscales {small}x{small} images {self.upscale}x: give them (genlab edit upscale)"
            )
        if tuple(lowres.shape) != (n, channels, small, small):
            raise GenlabError(
                f"this upscaler takes {n} images of {channels}x{small}x{small}, got {tuple(lowres.shape)}"
            )
        return lowres

    def class_index(self, name: str) -> int:
        """The class index of a class name (e.g. "7", "circle") or a number given as text."""
        return class_index(name, self.class_names, self.num_classes)

    def __call__(
        self,
        num_images: int = 1,
        class_labels: int | list[int] | torch.Tensor | None = None,
        num_inference_steps: int = 20,
        guidance_scale: float = 3.0,
        sampler: str = "dpmpp-2m",
        generator: torch.Generator | None = None,
        return_trajectory: bool = False,
        on_step: Callable[[int, int, torch.Tensor], None] | None = None,
        lowres: torch.Tensor | None = None,
        classifier: nn.Module | None = None,
        classifier_scale: float = 1.0,
        **sampler_kwargs: Any,
    ) -> PipelineOutput:
        """Generate ``num_images`` images; ``class_labels`` (one, or one per image, cycled) for a class model.
        An upscaler (``upscale`` > 0) sharpens ``lowres``, (num_images, C, h, w) images in [0, 1] ``upscale``
        times smaller than its output.

        ``guidance_scale`` applies with class labels (1 = plain conditional sampling, 0 = the model's
        unconditional prediction); ``sampler`` is one of ``genlab.diffusion.SAMPLERS``; extra keywords
        (e.g. ``eta`` for ddim) go to the sampler.

        ``classifier`` (a noise-aware one, `genlab train classifier --noisy`) guides toward ``class_labels``
        by its gradient, ``classifier_scale`` times (Dhariwal & Nichol 2021), on a class-conditional model
        (with classifier-free guidance, or without it at ``guidance_scale`` 0) or an unconditional one.
        """
        if num_images < 1:
            raise GenlabError(f"num_images must be at least 1 (got {num_images})")
        labels = None
        if class_labels is not None:
            labels = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1)
            if labels.numel() == 0:
                raise GenlabError("class_labels is empty")
            labels = labels.repeat((num_images + labels.numel() - 1) // labels.numel())[:num_images]
        guide = None
        if classifier is not None:
            if labels is None:
                raise GenlabError("classifier guidance needs class_labels: the classes to guide toward")
            guide = ClassifierGuide(classifier, labels.to(next(classifier.parameters()).device))
        trajectory: list[torch.Tensor] | None = [] if return_trajectory else None
        record = step_recorder(self.unet, num_inference_steps, trajectory, on_step)

        images = generate(
            self.unet,
            self.schedule,
            self.diffusion.parameterization,
            (num_images, *sample_shape(self.unet)),
            class_labels=labels if guide is None or self.num_classes else None,
            steps=num_inference_steps,
            sampler=sampler,
            guidance_scale=guidance_scale,
            generator=generator,
            callback=record,
            lowres=self._check_lowres(lowres, num_images),
            precision=self.precision,
            guide=guide,
            guide_scale=classifier_scale,
            **sampler_kwargs,
        ).cpu()
        return PipelineOutput(tensor_to_pil(images), images, labels, trajectory)
