"""The one adapter between a network trained on the discrete VP process and the samplers.

Samplers follow Karras et al. (2022) and k-diffusion: they integrate in the variance-exploding form
x = x0 + sigma eps and ask a denoiser D(x; sigma) for the x0 estimate. ``VPDenoiser`` is that denoiser for
any network trained with ``genlab.diffusion.parameterization``, the role of EDM's ``VPPrecond`` and
k-diffusion's ``DiscreteEpsDDPMDenoiser`` / ``DiscreteVDDPMDenoiser``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from genlab.diffusion.parameterization import check_parameterization, network_input, predict_x0
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
        self.parameterization = check_parameterization(parameterization)
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
            out = self.net(network_input(self.parameterization, x_t, abar), t, **cond)
        return predict_x0(self.parameterization, x_t, out.to(x.dtype), abar)
