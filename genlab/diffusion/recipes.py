"""Measured recipes: what `genlab demo` trains, and what the README's tables measured.

Each recipe is a dict of three parts: ``diffusion`` (DiffusionConfig fields), ``unet`` (U-Net options of
DiffusionTask) and ``train`` (TrainConfig fields); the number of steps is the caller's. The comparisons
that chose them are in the README (Diffusion: learning per image).
"""

from __future__ import annotations

from typing import Any

# Class-conditional MNIST: the U-Net of `genlab train diffusion` (1.11M parameters), eps-prediction with
# Min-SNR-5 loss weighting and twice the default learning rate. No EMA: in runs of about a thousand
# steps the model still improves fast at the end, and an average over the last hundred steps lags
# behind it (900 steps: 96.0% recognised with the trained weights, 94.3% with the EMA's).
MNIST_RECIPE: dict[str, dict[str, Any]] = {
    "diffusion": dict(min_snr_gamma=5.0),
    "unet": {},
    "train": dict(batch_size=32, lr=2e-3, warmup_steps=200, ema_decay=0.0, grad_clip=1.0),
}

# Text-to-image on shapes: narrow at full size (16 channels, 64 below) with attention at 8x8 only, so a
# step costs 0.57x that of (32, 64, 64) with attention at 16x16 and 8x8; pixel coordinates as input;
# Min-SNR-5; the prompts read by a frozen CLIP text tower (the caller's text_encoder="clip:RUN"). No EMA,
# as for MNIST (1,200 steps: 75.3% of prompts right with the trained weights, 65.3% with the EMA's).
T2I_RECIPE: dict[str, dict[str, Any]] = {
    "diffusion": dict(min_snr_gamma=5.0),
    "unet": dict(base_channels=16, channel_mults=(1, 4, 4), attention_levels=(2,), coordinates=True),
    "train": dict(batch_size=32, lr=1e-3, warmup_steps=200, ema_decay=0.0, grad_clip=1.0),
}
