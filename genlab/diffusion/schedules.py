"""Noise schedules of the discrete variance-preserving (VP) diffusion process of Ho et al. (2020).

The forward process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) (Ho et al. 2020, eq. 4) is fixed by
the betas. Samplers work instead in the variance-exploding form of Karras et al. (2022), x = x_0 + sigma eps,
with sigma = sqrt((1 - abar) / abar); this module holds the table that maps between the two, as
k-diffusion's ``DiscreteSchedule`` does.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from genlab.checks import MAX_TIMESTEPS
from genlab.errors import GenlabError

SCHEDULES = ("linear", "cosine", "sigmoid", "scaled_linear")
SPACINGS = ("trailing", "leading", "linspace")


@dataclass(frozen=True)
class ScheduleConfig:
    """Which beta schedule, over how many training timesteps. ``beta_start``/``beta_end`` are used by
    "linear", "scaled_linear" and "sigmoid"; "cosine" is defined by its offset s = 0.008 alone.

    ``spacing`` and ``steps_offset`` place n sampling steps on the training timesteps (the "discrete"
    sigmas, genlab.diffusion.samplers): "trailing" (genlab's own, Lin et al. 2023, Table 2), "leading"
    (every T // n-th timestep from 0, shifted by ``steps_offset``: Stable Diffusion 1.x and 2.x) or
    "linspace" (n evenly spaced, fractional, timesteps from T - 1 down to 0), as diffusers'
    ``timestep_spacing``."""

    kind: str = "linear"
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    spacing: str = "trailing"
    steps_offset: int = 0


def _validate(config: ScheduleConfig) -> None:
    if config.kind not in SCHEDULES:
        raise GenlabError(f"unknown noise schedule {config.kind!r}; choose one of: {', '.join(SCHEDULES)}")
    T = config.timesteps
    if isinstance(T, bool) or not isinstance(T, numbers.Integral) or not 2 <= T <= MAX_TIMESTEPS:
        raise GenlabError(
            f"schedule timesteps must be an integer between 2 and {MAX_TIMESTEPS}, got {config.timesteps!r}"
        )
    if config.spacing not in SPACINGS:
        raise GenlabError(
            f"unknown timestep spacing {config.spacing!r}; choose one of: {', '.join(SPACINGS)}"
        )
    offset = config.steps_offset
    if isinstance(offset, bool) or not isinstance(offset, numbers.Integral) or not 0 <= offset < T:
        raise GenlabError(f"steps_offset must be a whole number in [0, {T}), got {offset!r}")
    for name in ("beta_start", "beta_end"):
        value = getattr(config, name)
        if not 0.0 < value < 1.0:
            raise GenlabError(f"schedule {name} must lie in (0, 1), got {value!r}")


def _cosine_abar(t: torch.Tensor, timesteps: int, s: float = 0.008) -> torch.Tensor:
    """f(t) / f(0) with f(t) = cos^2(((t/T + s) / (1 + s)) pi/2): Nichol & Dhariwal (2021), eq. 17."""

    def f(u: torch.Tensor) -> torch.Tensor:
        return torch.cos((u / timesteps + s) / (1 + s) * math.pi / 2) ** 2

    return f(t) / f(torch.zeros_like(t))


def make_betas(config: ScheduleConfig) -> torch.Tensor:
    """The betas of ``config`` as a float64 tensor of shape (T,); index i holds beta_{i+1} of the paper.

    - "linear": evenly spaced from beta_start to beta_end (Ho et al. 2020, sec. 4: 1e-4 to 0.02 for T=1000).
    - "cosine": beta_t = 1 - abar_t / abar_{t-1} with abar from Nichol & Dhariwal (2021) eq. 17 (s = 0.008),
      clipped at 0.999 as in their sec. 3.2, because abar_T = 0 would make the last beta exactly 1.
    - "scaled_linear": evenly spaced square roots, betas = linspace(sqrt(beta_start), sqrt(beta_end), T)^2:
      the schedule latent diffusion was trained with (Rombach et al. 2022; Stable Diffusion: 0.00085 to
      0.012), diffusers' ``beta_schedule="scaled_linear"``.
    - "sigmoid": betas = sigmoid(linspace(-6, 6, T)) (beta_end - beta_start) + beta_start, the schedule of
      GeoDiff (Xu et al. 2022, ``get_beta_schedule``) that diffusers ships as ``beta_schedule="sigmoid"``.
      Its endpoints lie slightly inside [beta_start, beta_end] (sigmoid(+-6) is not 0 or 1). It is not the
      sigmoid schedule of Jabri et al. (2022), which is defined on abar rather than on beta.
    """
    _validate(config)
    T = int(config.timesteps)
    if config.kind == "linear":
        return torch.linspace(config.beta_start, config.beta_end, T, dtype=torch.float64)
    if config.kind == "scaled_linear":
        return torch.linspace(config.beta_start**0.5, config.beta_end**0.5, T, dtype=torch.float64) ** 2
    if config.kind == "cosine":
        steps = torch.arange(T + 1, dtype=torch.float64)
        abar = _cosine_abar(steps, T)
        return (1.0 - abar[1:] / abar[:-1]).clamp(max=0.999)
    ramp = torch.linspace(-6.0, 6.0, T, dtype=torch.float64)
    return torch.sigmoid(ramp) * (config.beta_end - config.beta_start) + config.beta_start


def _work_dtype(device: torch.device) -> torch.dtype:
    # The tables are float64 for accuracy near abar -> 0; MPS has no float64, so fall back there.
    return torch.float32 if device.type == "mps" else torch.float64


class NoiseSchedule:
    """Precomputed tables of the discrete VP process: betas, abar_t = prod_{s<=t} (1 - beta_s) and the
    equivalent noise levels sigma_t = sqrt((1 - abar_t) / abar_t), increasing with t.

    Timesteps are 0-based: t = 0 is the paper's t = 1 (the least noisy) and t = T - 1 the paper's T.
    """

    def __init__(self, config: ScheduleConfig = ScheduleConfig()) -> None:
        self.config = config
        self.betas = make_betas(config)
        self.timesteps = int(config.timesteps)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)
        self.sigmas = ((1.0 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()
        self.log_sigmas = self.sigmas.log()
        self.sigma_min = float(self.sigmas[0])
        self.sigma_max = float(self.sigmas[-1])

    def __repr__(self) -> str:
        return f"NoiseSchedule({self.config})"

    def _gather(self, table: torch.Tensor, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise GenlabError(f"timesteps must be an integer tensor, got {t.dtype}")
        return table.to(dtype=dtype).to(t.device)[t]

    def abar(self, t: torch.Tensor) -> torch.Tensor:
        """abar_t for integer timesteps ``t`` of shape (N,), as float32 on ``t``'s device."""
        return self._gather(self.alphas_cumprod, t, torch.float32)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise: a draw from q(x_t | x_0), Ho et al. (2020) eq. 4.

        ``t`` is a LongTensor (N,) and ``x0``, ``noise`` have shape (N, ...); the result has x0's dtype.
        """
        # Half-precision inputs are combined in float32, then rounded once.
        compute = torch.promote_types(x0.dtype, torch.float32)
        abar = self._gather(self.alphas_cumprod, t, compute).reshape(-1, *([1] * (x0.ndim - 1)))
        x_t = abar.sqrt() * x0.to(compute) + (1.0 - abar).sqrt() * noise.to(compute)
        return x_t.to(x0.dtype)

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """The continuous timestep of noise level ``sigma``: linear interpolation of log sigma over the
        table, clamped to [0, T - 1] (k-diffusion ``DiscreteSchedule.sigma_to_t``). Table values map to
        their integer timestep. Same shape as ``sigma``, in its (floating) dtype."""
        sigma = torch.as_tensor(sigma)
        out_dtype = sigma.dtype if sigma.dtype.is_floating_point else torch.float32
        work = _work_dtype(sigma.device)
        log_sigmas = self.log_sigmas.to(work).to(sigma.device)
        log_sigma = sigma.to(work).log()
        # Index of the table entry at or below log_sigma, kept so that [low, low + 1] is a valid interval.
        low = (torch.searchsorted(log_sigmas, log_sigma.reshape(-1), right=True) - 1).clamp(
            0, self.timesteps - 2
        )
        low = low.reshape(log_sigma.shape)
        w = ((log_sigma - log_sigmas[low]) / (log_sigmas[low + 1] - log_sigmas[low])).clamp(0.0, 1.0)
        return (low.to(work) + w).to(out_dtype)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """The noise level at continuous timestep ``t`` in [0, T - 1], interpolating log sigma linearly
        between table entries: the inverse of :meth:`sigma_to_t` (k-diffusion ``DiscreteSchedule``)."""
        t = torch.as_tensor(t)
        out_dtype = t.dtype if t.dtype.is_floating_point else torch.float32
        work = _work_dtype(t.device)
        log_sigmas = self.log_sigmas.to(work).to(t.device)
        t = t.to(work).clamp(0, self.timesteps - 1)
        low = t.floor().long().clamp(max=self.timesteps - 2)
        w = t - low.to(work)
        log_sigma = (1.0 - w) * log_sigmas[low] + w * log_sigmas[low + 1]
        return log_sigma.exp().to(out_dtype)
