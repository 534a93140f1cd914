"""The two pixel ranges of the project: images in [0, 1] (data, pictures, classifiers) and the [-1, 1]
the generative networks model (DDPM, Ho et al. 2020, Sec. 3.3: "image data consists of integers in
{0, ..., 255} scaled linearly to [-1, 1]"; DCGAN's tanh output likewise). One pair of maps between them,
used by the diffusion, GAN and autoencoder code alike."""

from __future__ import annotations

import torch


def to_model_space(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> the [-1, 1] the networks model."""
    return images * 2.0 - 1.0


def to_images(x: torch.Tensor) -> torch.Tensor:
    """Model space -> [0, 1] images, clamped (a sample may overshoot the data range)."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)
