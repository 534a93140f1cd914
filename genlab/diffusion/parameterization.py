"""What the network predicts, and how to read its output back as an estimate of x0 or of the noise.

Four choices (all in the VP form x_t = sqrt(abar) x0 + sqrt(1 - abar) eps of Ho et al. 2020, eq. 4):
"eps" the noise (Ho et al. 2020, eq. 11), "v" = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022,
sec. 4 and appendix D), "x0" the clean data, and "edm", the preconditioning of Karras et al. (2022,
Table 1 and eq. 7): the network sees its input scaled to unit variance and predicts
F = (x0 - c_skip x) / c_out, a mix of x0 and the noise whose target has unit variance at every noise
level. They are interchangeable at sampling time: for fixed x_t and abar each is an affine function of
the others, so samplers only ever see the x0 estimate.

Only "edm" changes the network's input (``network_input``); the others are given x_t itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genlab.errors import GenlabError

PARAMETERIZATIONS = ("eps", "v", "x0", "edm")
SIGMA_DATA = 0.5  # Karras et al. (2022), Table 1: the data's standard deviation assumed by "edm"


def check_parameterization(param: str) -> str:
    """Return ``param`` if it names a parameterization, else raise a GenlabError listing the valid ones."""
    if param not in PARAMETERIZATIONS:
        raise GenlabError(
            f"unknown parameterization {param!r}; choose one of: {', '.join(PARAMETERIZATIONS)}"
        )
    return param


def _coefficients(abar: torch.Tensor | float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sqrt(abar) and sqrt(1 - abar), broadcast from (N,) (or a scalar) to ``like``'s shape and dtype."""
    abar = torch.as_tensor(abar, device=like.device).to(like.dtype)
    abar = abar.reshape(-1, *([1] * (like.ndim - 1))) if abar.ndim > 0 else abar
    return abar.sqrt(), (1.0 - abar).sqrt()


def edm_coefficients(
    abar: torch.Tensor | float, like: torch.Tensor, sigma_data: float = SIGMA_DATA
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """c_skip, c_out and c_in of Karras et al. (2022), Table 1, at sigma^2 = (1 - abar) / abar, broadcast
    to ``like``: c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2) and
    c_in = 1 / sqrt(sigma^2 + sd^2), with D(x) = c_skip x + c_out F(c_in x) for x = x0 + sigma eps."""
    a, b = _coefficients(abar, like)
    sigma = b / a
    norm = (sigma.square() + sigma_data**2).sqrt()
    return sigma_data**2 / norm.square(), sigma * sigma_data / norm, 1.0 / norm


def network_input(param: str, x_t: torch.Tensor, abar: torch.Tensor | float) -> torch.Tensor:
    """What the network is given at x_t: x_t itself, or for "edm" c_in x with x = x_t / sqrt(abar) the
    variance-exploding form, x0 + sigma eps scaled to unit variance (Karras et al. 2022, Table 1)."""
    check_parameterization(param)
    if param != "edm":
        return x_t
    a, _ = _coefficients(abar, x_t)
    _, _, c_in = edm_coefficients(abar, x_t)
    return c_in * x_t / a


def training_target(param: str, x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """The regression target of ``param`` for x_t = sqrt(abar) x0 + sqrt(1 - abar) noise."""
    check_parameterization(param)
    if param == "eps":
        return noise
    if param == "x0":
        return x0
    a, b = _coefficients(abar, x0)
    if param == "edm":  # F's target (Karras et al. 2022, eq. 8), with x = x0 + sigma noise
        c_skip, c_out, _ = edm_coefficients(abar, x0)
        return (x0 - c_skip * (x0 + (b / a) * noise)) / c_out
    return a * noise - b * x0  # v, Salimans & Ho (2022) sec. 4


def predict_x0(param: str, x_t: torch.Tensor, out: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """The x0 estimate implied by network output ``out`` of kind ``param`` at x_t with noise level abar."""
    check_parameterization(param)
    if param == "x0":
        return out
    a, b = _coefficients(abar, x_t)
    if param == "eps":
        return (x_t - b * out) / a  # eq. 4 of Ho et al. solved for x0
    if param == "edm":
        c_skip, c_out, _ = edm_coefficients(abar, x_t)
        return c_skip * x_t / a + c_out * out  # D(x) = c_skip x + c_out F (Karras et al. 2022, eq. 7)
    return a * x_t - b * out  # x0 = alpha z - sigma v (Salimans & Ho 2022, appendix D)


def predict_eps(param: str, x_t: torch.Tensor, out: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """The noise estimate implied by network output ``out`` of kind ``param`` (undefined at abar = 1 for
    "x0", where x_t carries no noise to estimate)."""
    check_parameterization(param)
    if param == "eps":
        return out
    a, b = _coefficients(abar, x_t)
    if param == "v":
        return b * x_t + a * out  # eps = sigma z + alpha v (Salimans & Ho 2022, appendix D)
    x0 = predict_x0(param, x_t, out, abar) if param == "edm" else out
    return (x_t - a * x0) / b


def min_snr_weight(param: str, abar: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-timestep loss weight of Min-SNR-gamma (Hang et al. 2023, sec. 3.4): every parameterization's
    loss re-weighted to the x0 loss times min(SNR, gamma), SNR = abar / (1 - abar). The weight on the
    eps loss is min(SNR, gamma) / SNR, on the v loss min(SNR, gamma) / (SNR + 1), on the x0 loss
    min(SNR, gamma). Nearly clean timesteps, whose fine detail the eps loss favours, stop drowning the
    noisy ones that decide the layout, so training converges several times faster (their fig. 1)."""
    check_parameterization(param)
    snr = abar / (1.0 - abar)
    clipped = snr.clamp_max(gamma)
    if param == "eps":
        return clipped / snr
    if param == "v":
        return clipped / (snr + 1.0)
    if param == "edm":  # the F loss is the x0 loss divided by c_out^2 = sd^2 / (SNR sd^2 + 1)
        return clipped * SIGMA_DATA**2 / (snr * SIGMA_DATA**2 + 1.0)
    return clipped


def diffusion_loss(
    param: str,
    net_out: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    abar: torch.Tensor,
    min_snr_gamma: float = 0.0,
) -> torch.Tensor:
    """Mean squared error between the network output and its target: the gradient step of Ho et al.
    (2020) Algorithm 1, ||eps - eps_theta(x_t, t)||^2, generalised to the v, x0 and EDM targets; with
    ``min_snr_gamma`` > 0 each sample's error is weighted by ``min_snr_weight``. For "edm" the plain
    MSE of F is Karras et al.'s loss: their weight lambda(sigma) = 1 / c_out^2 on the x0 error (Table 1).

    Computed in float32 at least, so that a half-precision forward pass still gets an accurate loss.
    """
    target = training_target(param, x0, noise, abar)
    dtype = torch.promote_types(torch.promote_types(net_out.dtype, target.dtype), torch.float32)
    if min_snr_gamma <= 0:
        return F.mse_loss(net_out.to(dtype), target.to(dtype))
    per_sample = (net_out.to(dtype) - target.to(dtype)).square().flatten(1).mean(1)
    weight = min_snr_weight(param, torch.as_tensor(abar, device=per_sample.device).to(dtype), min_snr_gamma)
    return (weight * per_sample).mean()
