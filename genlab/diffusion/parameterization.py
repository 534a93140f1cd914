"""What the network predicts, and how to read its output back as an estimate of x0 or of the noise.

Four choices (all in the VP form x_t = sqrt(abar) x0 + sqrt(1 - abar) eps of Ho et al. 2020, eq. 4):
"eps" the noise (Ho et al. 2020, eq. 11), "v" = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022,
sec. 4 and appendix D), "x0" the clean data, and "edm", the preconditioning of Karras et al. (2022,
Table 1 and eq. 7): the network sees its input scaled to unit variance and predicts
F = (x0 - c_skip x) / c_out, a mix of x0 and the noise whose target has unit variance at every noise
level. They are interchangeable at sampling time: for fixed x_t and abar each is an affine function of
the others, so samplers only ever see the x0 estimate.

Each is a small class (``Eps``, ``V``, ``X0``, ``EDM``), found by name with ``get_parameterization``, the
way EDM's ``VPPrecond`` / ``EDMPrecond`` hold their preconditioning apart from the backbone. In the terms
of Karras et al. (2022), Table 1, every one is D(x) = c_skip x + c_out F(c_in x) for the VE variable
x = x_t / sqrt(abar) = x0 + sigma eps, sigma^2 = (1 - abar) / abar (``coefficients``), and its
Min-SNR loss weight is min(SNR, gamma) c_out^2 (``min_snr_weight``). The methods compute each in the
form the paper that introduced it writes (e.g. x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) for "eps"),
so results are the same to the bit as those forms.

Only "edm" changes the network's input (``network_input``); the others are given x_t itself.
The module-level functions (``training_target``, ``predict_x0``, ...) take the name and look it up.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genlab.errors import GenlabError

SIGMA_DATA = 0.5  # Karras et al. (2022), Table 1: the data's standard deviation assumed by "edm"

Coefficients = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _coefficients(abar: torch.Tensor | float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sqrt(abar) and sqrt(1 - abar), broadcast from (N,) (or a scalar) to ``like``'s shape and dtype."""
    abar = torch.as_tensor(abar, device=like.device).to(like.dtype)
    abar = abar.reshape(-1, *([1] * (like.ndim - 1))) if abar.ndim > 0 else abar
    return abar.sqrt(), (1.0 - abar).sqrt()


def edm_coefficients(
    abar: torch.Tensor | float, like: torch.Tensor, sigma_data: float = SIGMA_DATA
) -> Coefficients:
    """c_skip, c_out and c_in of Karras et al. (2022), Table 1, at sigma^2 = (1 - abar) / abar, broadcast
    to ``like``: c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2) and
    c_in = 1 / sqrt(sigma^2 + sd^2), with D(x) = c_skip x + c_out F(c_in x) for x = x0 + sigma eps."""
    a, b = _coefficients(abar, like)
    sigma = b / a
    norm = (sigma.square() + sigma_data**2).sqrt()
    return sigma_data**2 / norm.square(), sigma * sigma_data / norm, 1.0 / norm


class Parameterization:
    """What a network predicts at x_t with noise level abar, as k-diffusion and EDM wrap a backbone.

    Subclasses give the regression ``target``, the x0 estimate its output implies (``predict_x0``), the
    Table 1 ``coefficients`` and the Min-SNR weight; the network's input and the noise estimate follow
    unless a subclass has a closer form.
    """

    name: str = ""

    def coefficients(self, abar: torch.Tensor | float, like: torch.Tensor) -> Coefficients:
        """(c_skip, c_out, c_in) of Karras et al. (2022), Table 1, broadcast to ``like``: the x0
        estimate is c_skip x + c_out F(c_in x) for the VE variable x = x_t / sqrt(abar)."""
        raise NotImplementedError

    def network_input(self, x_t: torch.Tensor, abar: torch.Tensor | float) -> torch.Tensor:
        """What the network is given at x_t: x_t itself (c_in x with c_in = sqrt(abar))."""
        return x_t

    def target(self, x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        """The regression target for x_t = sqrt(abar) x0 + sqrt(1 - abar) noise."""
        raise NotImplementedError

    def predict_x0(self, x_t: torch.Tensor, out: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        """The x0 estimate implied by network output ``out`` at x_t with noise level abar."""
        raise NotImplementedError

    def predict_eps(self, x_t: torch.Tensor, out: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        """The noise estimate implied by ``out``: eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar), eq. 4 of
        Ho et al. (2020) solved for eps (undefined at abar = 1, where x_t carries no noise)."""
        a, b = _coefficients(abar, x_t)
        return (x_t - a * self.predict_x0(x_t, out, abar)) / b

    def snr_weight(self, clipped: torch.Tensor, snr: torch.Tensor) -> torch.Tensor:
        """``clipped`` = min(SNR, gamma) times c_out^2, the weight that makes this loss the x0 loss
        times min(SNR, gamma) (Hang et al. 2023, sec. 3.4)."""
        raise NotImplementedError

    def min_snr_weight(self, abar: torch.Tensor, gamma: float, floor: float = 0.0) -> torch.Tensor:
        """Per-timestep loss weight of Min-SNR-gamma (Hang et al. 2023, sec. 3.4), SNR = abar / (1 - abar);
        with ``floor`` the x0 loss is weighted by SNR clamped to [floor, gamma] (``min_snr_weight``)."""
        snr = abar / (1.0 - abar)
        return self.snr_weight(snr.clamp(floor, gamma), snr)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Eps(Parameterization):
    """The noise, eps (Ho et al. 2020, eq. 11): c_skip = 1, c_out = -sigma."""

    name = "eps"

    def coefficients(self, abar: torch.Tensor | float, like: torch.Tensor) -> Coefficients:
        a, b = _coefficients(abar, like)
        return torch.ones_like(a), -b / a, a

    def target(self, x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        return noise

    def predict_x0(self, x_t: torch.Tensor, out: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        a, b = _coefficients(abar, x_t)
        return (x_t - b * out) / a  # eq. 4 of Ho et al. solved for x0

    def predict_eps(self, x_t: torch.Tensor, out: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        return out

    def snr_weight(self, clipped: torch.Tensor, snr: torch.Tensor) -> torch.Tensor:
        return clipped / snr  # c_out^2 = sigma^2 = 1 / SNR


class V(Parameterization):
    """v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022, sec. 4): c_skip = 1 / (1 + sigma^2),
    c_out = -sigma / sqrt(1 + sigma^2)."""

    name = "v"

    def coefficients(self, abar: torch.Tensor | float, like: torch.Tensor) -> Coefficients:
        a, b = _coefficients(abar, like)
        return a.square(), -b, a

    def target(self, x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        a, b = _coefficients(abar, x0)
        return a * noise - b * x0

    def predict_x0(self, x_t: torch.Tensor, out: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        a, b = _coefficients(abar, x_t)
        return a * x_t - b * out  # x0 = alpha z - sigma v (Salimans & Ho 2022, appendix D)

    def predict_eps(self, x_t: torch.Tensor, out: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        a, b = _coefficients(abar, x_t)
        return b * x_t + a * out  # eps = sigma z + alpha v (Salimans & Ho 2022, appendix D)

    def snr_weight(self, clipped: torch.Tensor, snr: torch.Tensor) -> torch.Tensor:
        return clipped / (snr + 1.0)  # c_out^2 = 1 - abar = 1 / (SNR + 1)


class X0(Parameterization):
    """The clean data itself: c_skip = 0, c_out = 1."""

    name = "x0"

    def coefficients(self, abar: torch.Tensor | float, like: torch.Tensor) -> Coefficients:
        a, _ = _coefficients(abar, like)
        return torch.zeros_like(a), torch.ones_like(a), a

    def target(self, x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        return x0

    def predict_x0(self, x_t: torch.Tensor, out: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        return out

    def snr_weight(self, clipped: torch.Tensor, snr: torch.Tensor) -> torch.Tensor:
        return clipped  # c_out^2 = 1


class EDM(Parameterization):
    """The preconditioning of Karras et al. (2022), Table 1 and eq. 7, with sigma_data = ``SIGMA_DATA``:
    the network sees c_in x and predicts F = (x0 - c_skip x) / c_out (``edm_coefficients``)."""

    name = "edm"

    def coefficients(self, abar: torch.Tensor | float, like: torch.Tensor) -> Coefficients:
        return edm_coefficients(abar, like)

    def network_input(self, x_t: torch.Tensor, abar: torch.Tensor | float) -> torch.Tensor:
        """c_in x with x = x_t / sqrt(abar) the variance-exploding form, x0 + sigma eps scaled to unit
        variance (Karras et al. 2022, Table 1)."""
        a, _ = _coefficients(abar, x_t)
        _, _, c_in = edm_coefficients(abar, x_t)
        return c_in * x_t / a

    def target(self, x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        a, b = _coefficients(abar, x0)
        c_skip, c_out, _ = edm_coefficients(abar, x0)
        return (x0 - c_skip * (x0 + (b / a) * noise)) / c_out  # eq. 8, with x = x0 + sigma noise

    def predict_x0(self, x_t: torch.Tensor, out: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        a, _ = _coefficients(abar, x_t)
        c_skip, c_out, _ = edm_coefficients(abar, x_t)
        return c_skip * x_t / a + c_out * out  # D(x) = c_skip x + c_out F (Karras et al. 2022, eq. 7)

    def snr_weight(self, clipped: torch.Tensor, snr: torch.Tensor) -> torch.Tensor:
        # the F loss is the x0 loss divided by c_out^2 = sd^2 / (SNR sd^2 + 1): Karras et al.'s
        # lambda(sigma) = 1 / c_out^2 on the x0 error is the plain MSE of F
        return clipped * SIGMA_DATA**2 / (snr * SIGMA_DATA**2 + 1.0)


_BY_NAME: dict[str, Parameterization] = {p.name: p for p in (Eps(), V(), X0(), EDM())}
PARAMETERIZATIONS = tuple(_BY_NAME)  # ("eps", "v", "x0", "edm")


def check_parameterization(param: str) -> str:
    """Return ``param`` if it names a parameterization, else raise a GenlabError listing the valid ones."""
    if param not in PARAMETERIZATIONS:
        raise GenlabError(
            f"unknown parameterization {param!r}; choose one of: {', '.join(PARAMETERIZATIONS)}"
        )
    return param


def get_parameterization(param: str | Parameterization) -> Parameterization:
    """The parameterization named ``param`` ("eps", "v", "x0" or "edm"); an instance is returned as is."""
    if isinstance(param, Parameterization):
        return param
    return _BY_NAME[check_parameterization(param)]


def network_input(
    param: str | Parameterization, x_t: torch.Tensor, abar: torch.Tensor | float
) -> torch.Tensor:
    """What the network is given at x_t (``Parameterization.network_input``)."""
    return get_parameterization(param).network_input(x_t, abar)


def training_target(
    param: str | Parameterization, x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor
) -> torch.Tensor:
    """The regression target of ``param`` for x_t = sqrt(abar) x0 + sqrt(1 - abar) noise."""
    return get_parameterization(param).target(x0, noise, abar)


def predict_x0(
    param: str | Parameterization, x_t: torch.Tensor, out: torch.Tensor, abar: torch.Tensor
) -> torch.Tensor:
    """The x0 estimate implied by network output ``out`` of kind ``param`` at x_t with noise level abar."""
    return get_parameterization(param).predict_x0(x_t, out, abar)


def predict_eps(
    param: str | Parameterization, x_t: torch.Tensor, out: torch.Tensor, abar: torch.Tensor
) -> torch.Tensor:
    """The noise estimate implied by network output ``out`` of kind ``param`` (undefined at abar = 1 for
    "x0", where x_t carries no noise to estimate)."""
    return get_parameterization(param).predict_eps(x_t, out, abar)


def min_snr_weight(
    param: str | Parameterization, abar: torch.Tensor, gamma: float, floor: float = 0.0
) -> torch.Tensor:
    """Per-timestep loss weight of Min-SNR-gamma (Hang et al. 2023, sec. 3.4): every parameterization's
    loss re-weighted to the x0 loss times min(SNR, gamma), SNR = abar / (1 - abar). The weight on the
    eps loss is min(SNR, gamma) / SNR, on the v loss min(SNR, gamma) / (SNR + 1), on the x0 loss
    min(SNR, gamma). Nearly clean timesteps, whose fine detail the eps loss favours, stop drowning the
    noisy ones that decide the layout, so training converges several times faster (their fig. 1).

    ``floor`` > 0 raises the weight of the noisiest levels to at least ``floor`` times their x0 loss:
    SNR clamped to [floor, gamma]. With ``floor`` 1 this is the truncated SNR weighting of Salimans & Ho
    (2022, sec. 4), max(SNR, 1), capped at gamma: the plain x0 MSE where the layout (and a motion) is
    decided, and up to gamma times it where only the fine detail is left to get right."""
    return get_parameterization(param).min_snr_weight(abar, gamma, floor)


def diffusion_loss(
    param: str | Parameterization,
    net_out: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    abar: torch.Tensor,
    min_snr_gamma: float = 0.0,
    snr_floor: float = 0.0,
) -> torch.Tensor:
    """Mean squared error between the network output and its target: the gradient step of Ho et al.
    (2020) Algorithm 1, ||eps - eps_theta(x_t, t)||^2, generalised to the v, x0 and EDM targets; with
    ``min_snr_gamma`` > 0 each sample's error is weighted by ``min_snr_weight`` (``snr_floor`` its floor).
    For "edm" the plain MSE of F is Karras et al.'s loss: their weight lambda(sigma) = 1 / c_out^2 on the
    x0 error (Table 1).

    Computed in float32 at least, so that a half-precision forward pass still gets an accurate loss.
    """
    p = get_parameterization(param)
    target = p.target(x0, noise, abar)
    dtype = torch.promote_types(torch.promote_types(net_out.dtype, target.dtype), torch.float32)
    if min_snr_gamma <= 0:
        return F.mse_loss(net_out.to(dtype), target.to(dtype))
    per_sample = (net_out.to(dtype) - target.to(dtype)).square().flatten(1).mean(1)
    abar = torch.as_tensor(abar, device=per_sample.device).to(dtype)
    weight = p.min_snr_weight(abar, min_snr_gamma, snr_floor)
    return (weight * per_sample).mean()
