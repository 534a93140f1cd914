"""Diffusion maths: noise schedules, parameterizations and loss, the denoiser adapter, guidance, samplers.

Nothing here knows a network's architecture: a network is any callable ``net(x_t, t, **cond)``.
"""

from genlab.diffusion.denoiser import VPDenoiser
from genlab.diffusion.guidance import CFGDenoiser
from genlab.diffusion.parameterization import (
    PARAMETERIZATIONS,
    Parameterization,
    diffusion_loss,
    get_parameterization,
    min_snr_weight,
    predict_eps,
    predict_x0,
    training_target,
)
from genlab.diffusion.samplers import (
    DEFAULT_SIGMAS,
    SAMPLERS,
    get_sigmas,
    get_sigmas_discrete,
    get_sigmas_karras,
    invert_ddim,
    sample,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_euler,
    sample_heun,
)
from genlab.diffusion.schedules import SCHEDULES, NoiseSchedule, ScheduleConfig, make_betas

__all__ = [
    "CFGDenoiser",
    "DEFAULT_SIGMAS",
    "NoiseSchedule",
    "PARAMETERIZATIONS",
    "Parameterization",
    "SAMPLERS",
    "SCHEDULES",
    "ScheduleConfig",
    "VPDenoiser",
    "diffusion_loss",
    "get_parameterization",
    "get_sigmas",
    "get_sigmas_discrete",
    "get_sigmas_karras",
    "invert_ddim",
    "make_betas",
    "min_snr_weight",
    "predict_eps",
    "predict_x0",
    "sample",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_euler",
    "sample_heun",
    "training_target",
]
