"""Samplers as pure functions with one signature, after k-diffusion's ``sampling.py``.

Every sampler is ``sampler(model, x, sigmas, extra_args=None, callback=None, generator=None)``:

- ``model(x, sigma_batch, **extra_args)`` is a denoiser returning the x0 estimate (``VPDenoiser``,
  ``CFGDenoiser``); samplers know nothing about the network behind it.
- ``x`` is the starting noise at level ``sigmas[0]``, i.e. unit Gaussian noise times ``sigmas[0]``.
- ``sigmas`` (n + 1,) decreases to a final 0; n steps are taken.
- ``callback(dict(i=, x=, sigma=, sigma_next=, denoised=))`` runs after step i (sigma as a float).
- ``generator`` (a ``torch.Generator``) makes every random draw, so a seed fixes the sample.

They integrate in the variance-exploding form x = x0 + sigma eps of Karras et al. (2022), where the
probability-flow ODE is dx/dsigma = (x - D(x; sigma)) / sigma. Step coefficients are computed as Python
floats (float64) from the sigmas, so x keeps its dtype and device. Samplers run without autograd; a model
that needs gradients (e.g. CLIP guidance) enables them inside its own call.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable

import torch

from genlab.diffusion.schedules import NoiseSchedule
from genlab.errors import GenlabError

Callback = Callable[[dict], None]


def _sigma_list(sigmas: torch.Tensor) -> list[float]:
    return torch.as_tensor(sigmas).detach().to("cpu", torch.float64).tolist()


def _model_call(model: Callable, x: torch.Tensor, sigma: float, extra_args: dict | None) -> torch.Tensor:
    s_in = x.new_full(
        (x.shape[0],), sigma, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32
    )
    return model(x, s_in, **(extra_args or {}))


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # Drawn in float32 on the generator's device and then moved, so one seed gives the same noise on CPU
    # and CUDA and in float32 and float64.
    device = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32)
    return noise.to(device=x.device, dtype=x.dtype)


def _report(callback: Callback | None, i: int, x, sigma: float, sigma_next: float, denoised) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised})


def get_ancestral_step(sigma_from: float, sigma_to: float, eta: float = 1.0) -> tuple[float, float]:
    """(sigma_down, sigma_up) of a stochastic step from sigma_from to sigma_to (k-diffusion): go
    deterministically to sigma_down, then add fresh noise of std sigma_up; sigma_down^2 + sigma_up^2 =
    sigma_to^2. sigma_up = eta sigma_to sqrt(1 - sigma_to^2 / sigma_from^2) is DDIM's sigma_t(eta)
    (Song et al. 2021, eq. 16) divided by sqrt(abar_{t-1}), i.e. the same noise in the VE form."""
    if eta == 0.0 or sigma_to == 0.0:
        return sigma_to, 0.0
    up = min(sigma_to, eta * math.sqrt(sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2))
    return math.sqrt(sigma_to**2 - up**2), up


@torch.no_grad()
def sample_euler(
    model: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Euler's method on the probability-flow ODE: the Euler step of Karras et al. (2022), Algorithm 2
    with S_churn = 0 and without its second-order correction (k-diffusion's ``sample_euler``).

    x_{i+1} = x_i + (sigma_{i+1} - sigma_i) d_i with d_i = (x_i - D(x_i; sigma_i)) / sigma_i, written as
    D + sigma_{i+1} d_i so that the last step lands exactly on D. NFE: n (one per step). Deterministic.
    """
    s = _sigma_list(sigmas)
    for i in range(len(s) - 1):
        denoised = _model_call(model, x, s[i], extra_args)
        d = (x - denoised) / s[i]
        x = denoised + s[i + 1] * d
        _report(callback, i, x, s[i], s[i + 1], denoised)
    return x


@torch.no_grad()
def sample_heun(
    model: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Heun's second-order method with EDM's stochastic churn: Karras et al. (2022), Algorithm 2.

    Each step first raises the noise level from sigma_i to sigma_hat = (1 + gamma) sigma_i by adding fresh
    noise of std S_noise sqrt(sigma_hat^2 - sigma_i^2), where gamma = min(S_churn / n, sqrt(2) - 1) for
    sigma_i in [S_tmin, S_tmax] and 0 elsewhere (lines 4-6), then takes an Euler step from sigma_hat to
    sigma_{i+1}, evaluates the slope there and averages the two slopes (lines 7-11). The last step, to
    sigma = 0 where the slope is undefined, stays an Euler step. With S_churn = 0 (the default) it is the
    deterministic Algorithm 1. NFE: 2n - 1.
    """
    for name, value in (("s_churn", s_churn), ("s_tmin", s_tmin), ("s_tmax", s_tmax), ("s_noise", s_noise)):
        if value < 0 or math.isnan(value):
            raise GenlabError(f"`{name}` must be >= 0, got {value}")
    s = _sigma_list(sigmas)
    n = len(s) - 1
    for i in range(n):
        sigma, sigma_next = s[i], s[i + 1]
        gamma = min(s_churn / n, math.sqrt(2.0) - 1.0) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (1.0 + gamma)
        if gamma > 0.0:
            x = x + s_noise * math.sqrt(sigma_hat**2 - sigma**2) * _randn_like(x, generator)
        denoised = _model_call(model, x, sigma_hat, extra_args)
        d = (x - denoised) / sigma_hat
        if sigma_next == 0.0:
            x = denoised  # Euler to sigma = 0: x + (0 - sigma_hat) d
        else:
            x_euler = x + (sigma_next - sigma_hat) * d
            d_next = (x_euler - _model_call(model, x_euler, sigma_next, extra_args)) / sigma_next
            x = x + (sigma_next - sigma_hat) * 0.5 * (d + d_next)
        _report(callback, i, x, sigma_hat, sigma_next, denoised)
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    model: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M): Lu et al. (2022) "DPM-Solver++", Algorithm 2, the multistep second-order solver
    in data-prediction form.

    In the VE variables lambda = -log sigma and h_i = lambda_{i+1} - lambda_i the update reads
    x_{i+1} = (sigma_{i+1} / sigma_i) x_i - (e^{-h_i} - 1) D_i with D_i = (1 + 1/(2 r_i)) D(x_i) -
    1/(2 r_i) D(x_{i-1}), r_i = h_{i-1} / h_i. The first step, and the last (to sigma = 0, infinite h),
    are first order, i.e. DDIM. NFE: n.
    """
    s = _sigma_list(sigmas)
    old_denoised = None
    for i in range(len(s) - 1):
        sigma, sigma_next = s[i], s[i + 1]
        denoised = _model_call(model, x, sigma, extra_args)
        if sigma_next == 0.0:
            x = denoised
        else:
            h = math.log(sigma / sigma_next)
            if old_denoised is None:
                denoised_d = denoised
            else:
                r = math.log(s[i - 1] / sigma) / h
                denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_next / sigma) * x - math.expm1(-h) * denoised_d
        old_denoised = denoised
        _report(callback, i, x, sigma, sigma_next, denoised)
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
    model: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE: the second-order multistep solver of the diffusion SDE in data-prediction
    form, Lu et al. (2022) "DPM-Solver++", section 4 and appendix B (SDE-DPM-Solver++), in the midpoint
    form of k-diffusion's ``sample_dpmpp_2m_sde`` and diffusers' ``DPMSolverMultistepScheduler`` with
    ``algorithm_type="sde-dpmsolver++"``.

    With lambda = -log sigma, h = lambda_{i+1} - lambda_i and eta = 1 the step is
    x_{i+1} = (sigma_{i+1} / sigma_i) e^{-h} x_i + (1 - e^{-2h}) D_i + sigma_{i+1} sqrt(1 - e^{-2h}) z,
    with D_i = D(x_i) + (1 / (2 r)) (D(x_i) - D(x_{i-1})), r = h_{i-1} / h_i, from the second step on: the
    exact solution of the SDE's linear part with the data prediction extrapolated linearly in lambda.
    eta scales the injected noise (h -> (1 + eta) h in the exponentials; eta = 0 is the 2M ODE solver
    in its midpoint form). The last step, to sigma = 0, returns the estimate. NFE: n.
    """
    if eta < 0 or s_noise < 0:
        raise GenlabError(f"`eta` and `s_noise` must be >= 0, got {eta} and {s_noise}")
    s = _sigma_list(sigmas)
    old_denoised, h_last = None, None
    for i in range(len(s) - 1):
        sigma, sigma_next = s[i], s[i + 1]
        denoised = _model_call(model, x, sigma, extra_args)
        if sigma_next == 0.0:
            x = denoised
            h = None
        else:
            h = math.log(sigma / sigma_next)
            eta_h = eta * h
            decay = -math.expm1(-h - eta_h)  # 1 - e^{-(1 + eta) h}
            x = (sigma_next / sigma) * math.exp(-eta_h) * x + decay * denoised
            if old_denoised is not None:
                x = x + 0.5 * decay * (h / h_last) * (denoised - old_denoised)
            if eta > 0.0:
                x = x + s_noise * sigma_next * math.sqrt(-math.expm1(-2.0 * eta_h)) * _randn_like(
                    x, generator
                )
        old_denoised, h_last = denoised, h
        _report(callback, i, x, sigma, sigma_next, denoised)
    return x


@torch.no_grad()
def sample_euler_ancestral(
    model: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Euler ancestral (k-diffusion's ``sample_euler_ancestral``, diffusers'
    ``EulerAncestralDiscreteScheduler``): each step splits sigma_{i+1} into sigma_down and sigma_up
    (``get_ancestral_step``), takes Euler's step of the probability-flow ODE (Karras et al. 2022,
    eq. 4) to sigma_down and adds fresh noise of std S_noise sigma_up. It is DDIM with this eta (Song et
    al. 2021, eq. 12; ``sample_ddim``), usually run on Karras sigmas; eta = 1 is ancestral sampling. The
    last step, to sigma = 0, returns the estimate. NFE: n.
    """
    if eta < 0 or s_noise < 0:
        raise GenlabError(f"`eta` and `s_noise` must be >= 0, got {eta} and {s_noise}")
    s = _sigma_list(sigmas)
    for i in range(len(s) - 1):
        sigma, sigma_next = s[i], s[i + 1]
        denoised = _model_call(model, x, sigma, extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        d = (x - denoised) / sigma
        x = denoised + sigma_down * d  # x + (sigma_down - sigma) d
        if sigma_up > 0.0:
            x = x + s_noise * sigma_up * _randn_like(x, generator)
        _report(callback, i, x, sigma, sigma_next, denoised)
    return x


@torch.no_grad()
def sample_ddim(
    model: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
) -> torch.Tensor:
    """DDIM, Song et al. (2021) eq. 12: x_{t-1} = sqrt(abar_{t-1}) x0_hat + sqrt(1 - abar_{t-1} -
    sigma_t^2) eps_hat + sigma_t z, with sigma_t(eta) from their eq. 16.

    Divided by sqrt(abar_{t-1}) this is x_next = x0_hat + sigma_down eps_hat + sigma_up z in the VE form
    (``get_ancestral_step``). With eta = 0 it is deterministic, draws no noise and is exactly the Euler
    step D + sigma_next (x - D) / sigma of ``sample_euler`` (Song et al. 2021, sec. 4.3, eq. 14); eta = 1 on
    consecutive timesteps is DDPM ancestral sampling. It is the step of ``sample_euler_ancestral``, which
    runs it. NFE: n.
    """
    if eta < 0:
        raise GenlabError(f"DDIM eta must be >= 0, got {eta}")
    return sample_euler_ancestral(model, x, sigmas, extra_args, callback, generator, eta=eta)


def repaint_path(n: int, jump_length: int, resample_jumps: int) -> list[int]:
    """The sigma indices RePaint's sampler visits over n steps (Lugmayr et al. 2022, section 4.2, the
    ``get_schedule_jump`` of their code): down one step at a time from index 0 (sigma_max) to n (sigma
    0), and at every ``jump_length`` steps, before the last jump_length, back up jump_length steps and
    down again, ``resample_jumps`` - 1 times, so each such stretch is traversed ``resample_jumps`` times
    in all. ``resample_jumps`` <= 1 is plain descent."""
    if isinstance(jump_length, bool) or not isinstance(jump_length, int) or jump_length < 1:
        raise GenlabError(f"`jump_length` must be an integer >= 1, got {jump_length!r}")
    if (
        isinstance(resample_jumps, bool)
        or not isinstance(resample_jumps, int)
        or not 0 <= resample_jumps <= 100
    ):
        raise GenlabError(f"`resample_jumps` must be an integer from 0 to 100, got {resample_jumps!r}")
    # RePaint counts time t = n - 1 .. -1 (index n - 1 - t) and jumps at t = 0, j, 2j, ... < n - j
    jumps = (
        {t: resample_jumps - 1 for t in range(0, n - jump_length, jump_length)} if resample_jumps > 1 else {}
    )
    t, times = n - 1, [n - 1]
    while t >= 0:
        t -= 1
        times.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                times.append(t)
    return [n - 1 - t for t in times]


@torch.no_grad()
def sample_ddpm(
    model: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
    known: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    resample_jumps: int = 0,
    jump_length: int = 10,
) -> torch.Tensor:
    """Ancestral sampling, Ho et al. (2020) Algorithm 2, with the posterior variance beta_tilde.

    Each step draws from q(x_{t-1} | x_t, x0 = x0_hat), eqs. 6-7: mean sqrt(abar_{t-1}) beta_t /
    (1 - abar_t) x0_hat + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t and variance beta_tilde_t =
    (1 - abar_{t-1}) / (1 - abar_t) beta_t, with abar = 1 / (1 + sigma^2) and alpha_t = abar_t / abar_{t-1}
    (so strided timesteps work too). Written in VP variables to be read against the paper; it equals
    ``sample_ddim`` with eta = 1 (Song et al. 2021, sec. 4.1), and on all T discrete sigmas it is the
    1000-step DDPM sampler. No noise is added on the last step. NFE: n.

    With ``known`` (model space) and ``mask`` (1 where ``known`` is kept) it is RePaint's sampler
    (Lugmayr et al. 2022, Algorithm 1): after each step the kept region of x is replaced by ``known``
    noised to the new level, x = m (known + sigma eps) + (1 - m) x; with ``resample_jumps`` r > 1,
    every ``jump_length`` steps the sampler also goes back up jump_length steps by the forward process
    (x + sqrt(sigma_up^2 - sigma^2) z, eq. 8's q(x_t | x_{t-1}) in these variables) and down again, r - 1
    times (``repaint_path``), so the generated region harmonises with the kept one. NFE: about n r.
    """
    s = _sigma_list(sigmas)
    n = len(s) - 1
    if resample_jumps > 1 and known is None:
        raise GenlabError("`resample_jumps` is RePaint's resampling for inpainting: give `known` and `mask`")
    path = repaint_path(n, jump_length, resample_jumps)
    for a, b in zip(path, path[1:], strict=False):
        if b < a:  # back up: diffuse from level s[a] to s[b] > s[a]
            x = x + math.sqrt(s[b] ** 2 - s[a] ** 2) * _randn_like(x, generator)
            continue
        sigma, sigma_next = s[a], s[b]
        denoised = _model_call(model, x, sigma, extra_args)
        abar_t, abar_prev = 1.0 / (1.0 + sigma**2), 1.0 / (1.0 + sigma_next**2)
        alpha_t = abar_t / abar_prev
        beta_t = 1.0 - alpha_t
        x_t = math.sqrt(abar_t) * x  # VE -> VP
        mean = (math.sqrt(abar_prev) * beta_t / (1.0 - abar_t)) * denoised + (
            math.sqrt(alpha_t) * (1.0 - abar_prev) / (1.0 - abar_t)
        ) * x_t
        variance = (1.0 - abar_prev) / (1.0 - abar_t) * beta_t
        x_prev = mean + math.sqrt(variance) * _randn_like(x, generator) if variance > 0.0 else mean
        x = x_prev / math.sqrt(abar_prev)  # VP -> VE
        if known is not None and mask is not None:
            noised = known + sigma_next * _randn_like(x, generator) if sigma_next > 0.0 else known
            x = mask * noised + (1 - mask) * x
        _report(callback, a, x, sigma, sigma_next, denoised)
    return x


SAMPLERS: dict[str, Callable] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpmpp-2m": sample_dpmpp_2m,
    "euler": sample_euler,
    "euler-ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "dpmpp-2m-sde": sample_dpmpp_2m_sde,
}

# The ancestral samplers were designed on the training timesteps; the ODE solvers do best on Karras sigmas.
DEFAULT_SIGMAS = {
    "ddpm": "discrete",
    "ddim": "discrete",
    "dpmpp-2m": "karras",
    "euler": "karras",
    "euler-ancestral": "karras",
    "heun": "karras",
    "dpmpp-2m-sde": "karras",
}

SIGMA_KINDS = ("karras", "discrete")


def _check_steps(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise GenlabError(f"the number of sampling steps must be an integer >= 1, got {n!r}")


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5: sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) -
    sigma_max^(1/rho)))^rho for i = 0..n-1, then a final 0. float64, shape (n + 1,)."""
    _check_steps(n)
    if not 0.0 < sigma_min <= sigma_max:
        raise GenlabError(f"Karras sigmas need 0 < sigma_min <= sigma_max, got {sigma_min} and {sigma_max}")
    ramp = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def get_sigmas_discrete(schedule: NoiseSchedule, n: int, start: int | None = None) -> torch.Tensor:
    """The sigmas of n training timesteps placed by the schedule's spacing, then 0. float64, (n + 1,).

    "trailing" (genlab's default; Lin et al. 2023, Table 2): round(T - k T / n) - 1 for k = 0..n-1, T-1
    first, so the first step starts at the schedule's true sigma_max, and evenly T/n apart, down to T/n - 1,
    after which the last step goes to sigma = 0 (clean data); for n = T these are all timesteps T-1 .. 0.
    "leading": k (T // n) + steps_offset for k = n-1..0, as Stable Diffusion's schedulers place them.
    "linspace": n evenly spaced timesteps from T - 1 to 0, fractional ones taking the interpolated sigma.
    With ``start`` the trajectory begins at that timestep (SDEdit): T is then start + 1.
    """
    _check_steps(n)
    T = schedule.timesteps if start is None else start + 1  # from timestep ``start`` down (SDEdit)
    if n > T:
        raise GenlabError(f"at most {T} steps from timestep {T - 1} of the discrete schedule, got {n}")
    spacing = schedule.config.spacing
    if spacing == "trailing":
        t = (T - torch.arange(n, dtype=torch.float64) * (T / n)).round().long() - 1
        sigmas = schedule.sigmas[t]
    elif spacing == "leading":
        t = (torch.arange(n - 1, -1, -1) * (T // n) + schedule.config.steps_offset).clamp(max=T - 1)
        sigmas = schedule.sigmas[t]
    else:
        sigmas = schedule.t_to_sigma(torch.linspace(T - 1, 0, n, dtype=torch.float64))
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def get_sigmas(
    schedule: NoiseSchedule, n: int, kind: str = "karras", start: int | None = None
) -> torch.Tensor:
    """n + 1 decreasing sigmas ending in 0: ``kind`` "karras" (eq. 5 between the schedule's sigma_min and
    sigma_max) or "discrete" (the training timesteps, trailing spacing); with ``start``, from the sigma of
    that timestep instead of sigma_max (a partial trajectory, as SDEdit runs)."""
    _check_steps(n)
    if kind == "karras":
        top = schedule.sigma_max if start is None else float(schedule.sigmas[start])
        return get_sigmas_karras(n, min(schedule.sigma_min, top), top)
    if kind == "discrete":
        return get_sigmas_discrete(schedule, n, start)
    raise GenlabError(f"unknown sigma spacing {kind!r}; choose one of: {', '.join(SIGMA_KINDS)}")


def sample(
    name: str,
    model: Callable,
    x_noise_unit: torch.Tensor,
    schedule: NoiseSchedule,
    steps: int,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
    sigmas_kind: str | None = None,
    x0: torch.Tensor | None = None,
    start: int | None = None,
    **sampler_kwargs,
) -> torch.Tensor:
    """Run sampler ``name`` for ``steps`` steps from unit Gaussian noise ``x_noise_unit``.

    Builds the sigmas (``DEFAULT_SIGMAS[name]`` unless ``sigmas_kind`` is given), scales the noise by
    sigmas[0] and calls the sampler; ``sampler_kwargs`` go to it (e.g. ``eta`` for "ddim"). With ``x0``
    (model space) and ``start`` (a timestep), the trajectory starts from x0 noised to that timestep,
    x = x0 + sigma_start eps in the sampler's variables: SDEdit (Meng et al. 2022, section 3.2).
    """
    if name not in SAMPLERS:
        raise GenlabError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    _check_steps(steps)
    sampler = SAMPLERS[name]
    accepted = set(inspect.signature(sampler).parameters) - {"model", "x", "sigmas", "extra_args", "callback"}
    unknown = sorted(set(sampler_kwargs) - accepted)
    if unknown:
        options = ", ".join(f"`{o}`" for o in sorted(accepted - {"generator"})) or "none"
        names = ", ".join(f"`{o}`" for o in unknown)
        raise GenlabError(f"sampler {name!r} takes no option {names} (its options: {options})")
    sigmas = get_sigmas(schedule, int(steps), sigmas_kind or DEFAULT_SIGMAS[name], start)
    x = x_noise_unit * float(sigmas[0])
    if x0 is not None:
        x = x + x0
    return sampler(
        model, x, sigmas, extra_args=extra_args, callback=callback, generator=generator, **sampler_kwargs
    )


@torch.no_grad()
def invert_ddim(
    model: Callable,
    x0: torch.Tensor,
    sigmas_increasing: torch.Tensor,
    extra_args: dict | None = None,
    fixed_point_iters: int = 0,
) -> torch.Tensor:
    """Deterministic DDIM inversion: Euler steps on the probability-flow ODE towards higher sigma
    (Song et al. 2021, sec. 4.3; as used for editing by Mokady et al. 2023, "Null-text inversion").

    ``sigmas_increasing`` is a sampling schedule reversed, e.g. ``get_sigmas(...).flip(0)`` = [0, ...,
    sigma_max]; the result is the x at its last sigma, which ``sample_ddim`` (eta = 0) with the original
    sigmas maps back to ``x0``. Each step uses the slope at its start; the first step, from sigma = 0
    where the slope is undefined, uses the model's noise estimate for x0 at the next sigma, as DDIM
    inversion does. The round trip then errs by O(1/n). NFE: n.

    ``fixed_point_iters`` > 0 refines each step by fixed-point iteration towards the exact inverse of the
    sampling step, x_next = x + (sigma_next - sigma) d(x_next; sigma_next) (Pan et al. 2023, "Effective
    real image editing with accelerated iterative diffusion inversion"), so the round trip becomes exact
    as the iteration converges. NFE: n (1 + fixed_point_iters).
    """
    if isinstance(fixed_point_iters, bool) or not isinstance(fixed_point_iters, int) or fixed_point_iters < 0:
        raise GenlabError(f"fixed_point_iters must be an integer >= 0, got {fixed_point_iters!r}")
    s = _sigma_list(sigmas_increasing)
    x = x0
    for i in range(len(s) - 1):
        sigma, sigma_next = s[i], s[i + 1]
        sigma_eval = sigma if sigma > 0.0 else sigma_next
        d = (x - _model_call(model, x, sigma_eval, extra_args)) / sigma_eval
        x_next = x + (sigma_next - sigma) * d
        for _ in range(fixed_point_iters):
            d = (x_next - _model_call(model, x_next, sigma_next, extra_args)) / sigma_next
            x_next = x + (sigma_next - sigma) * d
        x = x_next
    return x
