"""The one adapter between a network trained on the discrete VP process and the samplers, and the small
wrappers that change what a denoiser returns (a condition bound, known pixels kept, the estimate clamped).

Samplers follow Karras et al. (2022) and k-diffusion: they integrate in the variance-exploding form
x = x0 + sigma eps and ask a denoiser D(x; sigma) for the x0 estimate. ``VPDenoiser`` is that denoiser for
any network trained with ``genlab.diffusion.parameterization``, the role of EDM's ``VPPrecond`` and
k-diffusion's ``DiscreteEpsDDPMDenoiser`` / ``DiscreteVDDPMDenoiser``.

Each wrapper is itself a denoiser D(x; sigma) holding the one it wraps, as k-diffusion's ``CFGDenoiser``
does (classifier-free guidance: ``genlab.diffusion.guidance``), so ``genlab.diffusion.generate`` builds
the denoiser a sampler sees by composing them, and samplers know none of them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from genlab.diffusion.parameterization import get_parameterization
from genlab.diffusion.schedules import NoiseSchedule
from genlab.nn.precision import autocast


def sigma_batch(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """``sigma`` as a tensor of shape (N,) on x's device, for N = x.shape[0]: a scalar is repeated."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    sigma = torch.as_tensor(sigma, device=x.device).to(dtype)
    return sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma.reshape(x.shape[0])


class VPDenoiser:
    """Wraps a network trained on the discrete VP process, ``net(x_t, t, **cond)`` returning its
    ``parameterization`` output, as k-diffusion's D(x; sigma) -> estimate of x0, where x = x0 + sigma eps
    (the VE / Karras form).

    Karras et al. (2022), Table 1 (VP column) and k-diffusion ``external.py``: the network input is
    x_t = x / sqrt(1 + sigma^2) (c_in), its noise level abar = 1 / (1 + sigma^2) and its timestep
    t = schedule.sigma_to_t(sigma): a float tensor (N,), continuous between the training timesteps and the
    integer timestep (up to rounding) on the schedule's own sigmas, so the net must accept float timesteps.
    For "eps" this gives D = x - sigma eps_theta (c_skip = 1, c_out = -sigma); for "v",
    D = x / (1 + sigma^2) - sigma / sqrt(1 + sigma^2) v_theta; for "x0", D is the output itself; for
    "edm", Karras et al.'s own c_in, c_skip and c_out (``parameterization.edm_coefficients``).
    """

    def __init__(
        self, net: Callable, schedule: NoiseSchedule, parameterization: str = "eps", precision: str = "fp32"
    ) -> None:
        self.net = net
        self.precision = precision  # "bf16": the network runs under autocast (genlab.nn.precision)
        self.schedule = schedule
        self.param = get_parameterization(parameterization)
        self.parameterization = self.param.name
        self.sigma_min = schedule.sigma_min
        self.sigma_max = schedule.sigma_max

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond) -> torch.Tensor:
        """The x0 estimate at ``x`` (N, ...) with noise level ``sigma`` ((N,) or a scalar); x's dtype."""
        sigma = sigma_batch(sigma, x)
        abar = 1.0 / (1.0 + sigma**2)
        view = (-1,) + (1,) * (x.ndim - 1)
        x_t = x * abar.sqrt().reshape(view).to(x.dtype)
        t = self.schedule.sigma_to_t(sigma)
        with autocast(x.device, self.precision):
            out = self.net(self.param.network_input(x_t, abar), t, **cond)
        return self.param.predict_x0(x_t, out.to(x.dtype), abar)


class ConditionedDenoiser:
    """A denoiser with its condition keywords bound: D(x; sigma) = D(x; sigma, **cond), so a sampler, which
    passes none, gets the conditional prediction (classifier-free guidance at scale 1 is exactly this)."""

    def __init__(self, denoiser: Callable, cond: dict[str, torch.Tensor]) -> None:
        self.denoiser = denoiser
        self.cond = dict(cond)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        return self.denoiser(x, sigma, **self.cond)


class InpaintingDenoiser:
    """Inpainting by replacement (Song et al. 2021, appendix I): the x0 estimate takes the known values
    ``known`` where ``mask`` is 1, D = m known + (1 - m) D_free, so at every step the sampler's trajectory
    is pulled toward them. ``mask`` is (N or 1, 1, H, W) on the grid the denoiser works on."""

    def __init__(self, denoiser: Callable, known: torch.Tensor, mask: torch.Tensor) -> None:
        self.denoiser = denoiser
        self.known = known
        self.mask = mask

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        return self.mask * self.known + (1 - self.mask) * self.denoiser(x, sigma)


class ClampedDenoiser:
    """The x0 estimate clamped to the data range [low, high], as the sampler of Ho et al. (2020) does
    (``clip_denoised`` in their code): guided estimates at high noise can overshoot far outside it, and an
    ODE solver started from such a point lands off the data manifold (noise-filled samples)."""

    def __init__(self, denoiser: Callable, low: float = -1.0, high: float = 1.0) -> None:
        self.denoiser = denoiser
        self.low, self.high = low, high

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        return self.denoiser(x, sigma).clamp(self.low, self.high)
