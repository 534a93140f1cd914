"""What a diffusion run is: the forward process, the parameterization, the condition and how its samples are
drawn during training (``DiffusionConfig``, stored as config.json's ``diffusion``). A module of its own, so
that what reads a run (the networks' loader, the pipelines) need not import the training task."""

from __future__ import annotations

import math
from dataclasses import dataclass

from genlab.checks import MAX_TIMESTEPS, check_range
from genlab.diffusion.parameterization import PARAMETERIZATIONS
from genlab.diffusion.samplers import SAMPLERS
from genlab.diffusion.schedules import SCHEDULES, NoiseSchedule, ScheduleConfig
from genlab.errors import GenlabError

BACKBONES = ("unet", "dit")  # the denoisers of genlab.diffusion.networks
CONDITIONS = ("none", "class", "text")
NOISE_LEVELS = ("auto", "uniform", "lognormal")


@dataclass
class DiffusionConfig:
    """What the network predicts and under which forward process; stored as config.json's ``diffusion``."""

    schedule: str = "linear"
    timesteps: int = 1000
    parameterization: str = "eps"
    cond: str = "none"
    cond_dropout: float = 0.1  # share of training examples shown without class / with the empty prompt
    # A denoiser that reads CLIP embeddings (language-free, TextUNetConfig.context "embedding"): LAFITE's
    # xi, how far each training image's embedding is pushed at random (genlab.nn.text_unet)
    embedding_noise: float = 0.3
    min_snr_gamma: float = 0.0  # > 0: Min-SNR-gamma loss weighting (Hang et al. 2023); 0: the plain MSE
    # > 0 (with min_snr_gamma): the x0 loss weighted by SNR clamped to [snr_floor, min_snr_gamma]; 1 is
    # Salimans & Ho's (2022) truncated SNR, max(SNR, 1), capped (parameterization.min_snr_weight)
    snr_floor: float = 0.0
    # How training draws noise levels: "uniform" timesteps (Ho et al. 2020) or "lognormal" sigmas,
    # ln sigma ~ N(p_mean, p_std^2) (Karras et al. 2022, Table 1); "auto": lognormal for edm only.
    noise_levels: str = "auto"
    p_mean: float = -1.2
    p_std: float = 1.2
    sample_steps: int = 20  # for the grids drawn and the samples scored during training
    sample_guidance: float = 3.0
    sample_sampler: str = "dpmpp-2m"
    backbone: str = "unet"  # unet | dit (genlab.diffusion.networks)
    latent: str = ""  # the autoencoder run whose latents are diffused (latent diffusion); "": pixels
    upscale: int = 0  # > 0: a super-resolution model from images this many times smaller (SR3)

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise GenlabError(f"unknown schedule '{self.schedule}'; choose one of {', '.join(SCHEDULES)}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise GenlabError(
                f"unknown parameterization '{self.parameterization}'; "
                f"choose one of {', '.join(PARAMETERIZATIONS)}"
            )
        if self.cond not in CONDITIONS:
            raise GenlabError(f"unknown conditioning '{self.cond}'; choose one of {', '.join(CONDITIONS)}")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise GenlabError(f"`cond_dropout` must be in [0, 1) (got {self.cond_dropout})")
        if not 0.0 <= self.embedding_noise <= 10.0:
            raise GenlabError(f"`embedding_noise` must be in [0, 10] (got {self.embedding_noise})")
        if self.noise_levels not in NOISE_LEVELS:
            raise GenlabError(
                f"unknown `noise_levels` '{self.noise_levels}'; choose one of {', '.join(NOISE_LEVELS)}"
            )
        if not self.p_std > 0:
            raise GenlabError(f"`p_std` must be positive (got {self.p_std})")
        if self.min_snr_gamma < 0:
            raise GenlabError(f"`min_snr_gamma` must be 0 (off) or positive (got {self.min_snr_gamma})")
        if self.snr_floor and not 0 < self.snr_floor <= self.min_snr_gamma:
            raise GenlabError(
                f"`snr_floor` {self.snr_floor} must lie in (0, `min_snr_gamma`] (got `min_snr_gamma` "
                f"{self.min_snr_gamma}); set `min_snr_gamma` to the cap, or `snr_floor` to 0"
            )
        if self.sample_sampler not in SAMPLERS:
            raise GenlabError(f"unknown sampler '{self.sample_sampler}'; choose one of {', '.join(SAMPLERS)}")
        if self.backbone not in BACKBONES:
            raise GenlabError(f"unknown `backbone` '{self.backbone}'; choose one of {', '.join(BACKBONES)}")
        check_range("timesteps", self.timesteps, 1, MAX_TIMESTEPS)
        check_range("sample_steps", self.sample_steps, 1, MAX_TIMESTEPS)
        for name in ("p_mean", "p_std", "min_snr_gamma", "snr_floor", "sample_guidance"):
            check_range(name, getattr(self, name), -math.inf)  # any finite number
        if self.upscale not in (0, 2, 4):
            raise GenlabError(f"`upscale` must be 2 or 4 (got {self.upscale})")
        if self.upscale and (self.latent or self.backbone != "unet"):
            raise GenlabError("an `upscale` model is a pixel-space U-Net: drop `latent` and `backbone` dit")

    def noise_schedule(self) -> NoiseSchedule:
        return NoiseSchedule(ScheduleConfig(kind=self.schedule, timesteps=self.timesteps))

    @property
    def lognormal(self) -> bool:
        """Whether training draws log-normal noise levels (``noise_levels``, "auto" resolved)."""
        if self.noise_levels == "auto":
            return self.parameterization == "edm"
        return self.noise_levels == "lognormal"
