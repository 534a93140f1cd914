"""Diffusion maths checked against closed forms: schedules, parameterizations, the VP denoiser, every
sampler on a Gaussian data distribution whose exact denoiser is known, DDIM inversion and guidance."""

from __future__ import annotations

import math

import pytest
import torch

from genlab.diffusion import (
    DEFAULT_SIGMAS,
    PARAMETERIZATIONS,
    SAMPLERS,
    SCHEDULES,
    CFGDenoiser,
    NoiseSchedule,
    ScheduleConfig,
    VPDenoiser,
    diffusion_loss,
    get_parameterization,
    get_sigmas,
    get_sigmas_discrete,
    get_sigmas_karras,
    invert_ddim,
    make_betas,
    min_snr_weight,
    predict_eps,
    predict_x0,
    sample,
    sample_ddim,
    sample_ddpm,
    training_target,
)
from genlab.diffusion.config import DiffusionConfig
from genlab.diffusion.denoiser import ClampedDenoiser, ConditionedDenoiser, InpaintingDenoiser
from genlab.diffusion.generate import guided
from genlab.diffusion.samplers import sample_heun
from genlab.errors import GenlabError

LINEAR = NoiseSchedule()


@pytest.fixture(autouse=True)
def one_thread():
    """The tensors here are small (at most 20,000 numbers), so intra-op threads only add overhead, and on a
    loaded 2-core machine their spin-waits made the sampler tests several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The data distribution of the sampler tests: x0 ~ N(MU, S^2) per pixel. Its noised marginal at level
# sigma is N(MU, S^2 + sigma^2) and the exact denoiser is E[x0 | x] = MU + S^2 / (S^2 + sigma^2) (x - MU).
MU, S = 0.5, 1.0


def make_gaussian_denoiser(mu: float):
    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        return mu + S**2 / (S**2 + sigma**2) * (x - mu)

    return denoiser


gaussian_denoiser = make_gaussian_denoiser(MU)


SD = 0.5  # sigma_data of Karras et al. (2022), Table 1


def edm_c(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """c_skip, c_out, c_in of Karras et al. (2022), Table 1, written out here for the tests."""
    return SD**2 / (sigma**2 + SD**2), sigma * SD / (sigma**2 + SD**2).sqrt(), 1 / (sigma**2 + SD**2).sqrt()


def gaussian_net(schedule: NoiseSchedule, param: str):
    """A "network" net(x_t, t) that outputs the exact eps, v, x0 or EDM F of the Gaussian data, written
    from the definitions (not with genlab's parameterization helpers), so VPDenoiser is tested end to end.
    An "edm" network is given c_in x instead of x_t."""

    def net(x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.shape == (x_in.shape[0],) and t.dtype.is_floating_point
        assert float(t.min()) >= 0.0 and float(t.max()) <= schedule.timesteps - 1
        sigma = schedule.t_to_sigma(t.double()).reshape(-1, *([1] * (x_in.ndim - 1)))
        abar = 1.0 / (1.0 + sigma**2)
        c_skip, c_out, c_in = edm_c(sigma)
        # back to the VE variable x = x0 + sigma eps
        x = x_in.double() / c_in if param == "edm" else x_in.double() / abar.sqrt()
        x0 = MU + S**2 / (S**2 + sigma**2) * (x - MU)
        eps = (x - x0) / sigma
        out = {
            "eps": eps,
            "x0": x0,
            "v": abar.sqrt() * eps - (1.0 - abar).sqrt() * x0,
            "edm": (x0 - c_skip * x) / c_out,
        }[param]
        return out.to(x_in.dtype)

    return net


# ---------------------------------------------------------------- schedules


def test_linear_schedule_matches_ho_et_al():
    betas = make_betas(ScheduleConfig())
    assert betas.dtype == torch.float64 and betas.shape == (1000,)
    assert float(betas[0]) == pytest.approx(1e-4, rel=1e-12)
    assert float(betas[-1]) == pytest.approx(0.02, rel=1e-12)
    assert torch.allclose(betas.diff(), torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64))
    abar_T = math.prod(1.0 - b for b in betas.tolist())
    assert float(LINEAR.alphas_cumprod[-1]) == pytest.approx(abar_T, rel=1e-10)
    assert abar_T == pytest.approx(4.036e-5, rel=1e-3)  # the often quoted "about 4.04e-5" for T = 1000
    assert torch.allclose(LINEAR.sigmas, ((1 - LINEAR.alphas_cumprod) / LINEAR.alphas_cumprod).sqrt())
    assert bool((LINEAR.sigmas.diff() > 0).all())
    assert LINEAR.sigma_min == float(LINEAR.sigmas[0]) and LINEAR.sigma_max == float(LINEAR.sigmas[-1])


def test_cosine_schedule_matches_nichol_dhariwal_eq_17():
    T, s = 1000, 0.008
    schedule = NoiseSchedule(ScheduleConfig(kind="cosine", timesteps=T))
    t = torch.arange(1, T + 1, dtype=torch.float64)  # index i holds the paper's t = i + 1

    def f(u):
        return torch.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2

    expected = f(t) / f(torch.zeros((), dtype=torch.float64))
    betas = schedule.betas
    assert float(betas.max()) == pytest.approx(0.999)  # the clip bites at the very end only
    unclipped = int((betas < 0.999).sum())
    assert unclipped >= T - 2
    assert torch.allclose(schedule.alphas_cumprod[:unclipped], expected[:unclipped], rtol=1e-10, atol=0)
    assert bool((schedule.sigmas.diff() > 0).all())


def test_sigmoid_schedule_endpoints_and_monotone():
    config = ScheduleConfig(kind="sigmoid", beta_start=1e-4, beta_end=0.02)
    betas = make_betas(config)
    sig6 = 1.0 / (1.0 + math.exp(-6.0))
    assert float(betas[0]) == pytest.approx((1 - sig6) * (0.02 - 1e-4) + 1e-4, rel=1e-12)
    assert float(betas[-1]) == pytest.approx(sig6 * (0.02 - 1e-4) + 1e-4, rel=1e-12)
    assert float(betas[500]) == pytest.approx(0.5 * (0.02 + 1e-4), rel=1e-2)  # sigmoid(~0) = 1/2
    assert bool((betas.diff() > 0).all()) and 1e-4 < float(betas.min()) < float(betas.max()) < 0.02


@pytest.mark.parametrize("kind", SCHEDULES)
def test_sigma_t_round_trip(kind):
    schedule = NoiseSchedule(ScheduleConfig(kind=kind))
    T = schedule.timesteps
    # At table values sigma_to_t returns the integer timestep, exactly in float64.
    assert torch.equal(schedule.sigma_to_t(schedule.sigmas), torch.arange(T, dtype=torch.float64))
    # ... and to within float32 rounding when sigma is float32.
    t32 = schedule.sigma_to_t(schedule.sigmas.float())
    assert t32.dtype == torch.float32 and (t32 - torch.arange(T)).abs().max() < 1e-3
    t = torch.rand(500, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * (T - 1)
    t = torch.cat([t, torch.tensor([0.0, 0.5, T - 1.5, T - 1.0], dtype=torch.float64)])
    assert torch.allclose(schedule.sigma_to_t(schedule.t_to_sigma(t)), t, atol=1e-9, rtol=0)
    # Half way between two timesteps the log sigma is the mean of its neighbours' (linear interpolation).
    mid = schedule.t_to_sigma(torch.tensor([10.5], dtype=torch.float64))
    assert float(mid.log()) == pytest.approx(float(schedule.sigmas[10:12].log().mean()), rel=1e-12)
    # Out-of-range noise levels clamp to the ends of the table.
    clamped = schedule.sigma_to_t(torch.tensor([1e-6, 1e9]))
    assert clamped.tolist() == [0.0, float(T - 1)]


def test_q_sample_exact_and_statistics():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, 5, 7, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    abar = LINEAR.abar(t)
    assert abar.dtype == torch.float32 and abar.shape == (4,)
    # noise = 0: exactly the scaled data.
    x_t = LINEAR.q_sample(x0, t, torch.zeros_like(x0))
    assert x_t.dtype == x0.dtype
    assert torch.allclose(x_t, abar.sqrt().reshape(-1, 1, 1, 1) * x0, rtol=1e-6, atol=0)
    # Statistics of 200,000 draws of x_t for x0 = 2 at t = 300: mean and variance within 5 standard errors.
    n, t_i = 200_000, 300
    a = float(LINEAR.alphas_cumprod[t_i])
    x_t = LINEAR.q_sample(torch.full((n, 1), 2.0), torch.full((n,), t_i), torch.randn(n, 1, generator=g))
    mean_se, var_se = math.sqrt((1 - a) / n), (1 - a) * math.sqrt(2 / n)
    assert abs(float(x_t.mean()) - 2 * math.sqrt(a)) < 5 * mean_se
    assert abs(float(x_t.var()) - (1 - a)) < 5 * var_se
    # float64 in, float64 out.
    assert LINEAR.q_sample(x0.double(), t, torch.randn(x0.shape, generator=g).double()).dtype == torch.float64


# ---------------------------------------------------------------- parameterizations


@pytest.mark.parametrize("param", PARAMETERIZATIONS)
def test_parameterization_round_trips(param):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(5, 2, 3, 3, generator=g, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    abar = torch.tensor([0.999, 0.9, 0.5, 0.1, 1e-3], dtype=torch.float64)
    a, b = abar.sqrt().reshape(-1, 1, 1, 1), (1 - abar).sqrt().reshape(-1, 1, 1, 1)
    x_t = a * x0 + b * noise
    target = training_target(param, x0, noise, abar)
    c_skip, c_out, _ = edm_c(b / a)
    edm = (x0 - c_skip * (x0 + b / a * noise)) / c_out  # Karras et al. (2022), eq. 8
    expected = {"eps": noise, "x0": x0, "v": a * noise - b * x0, "edm": edm}[param]
    assert torch.allclose(target, expected, rtol=0, atol=1e-12)
    assert torch.allclose(predict_x0(param, x_t, target, abar), x0, rtol=0, atol=1e-9)
    assert torch.allclose(predict_eps(param, x_t, target, abar), noise, rtol=0, atol=1e-9)
    # The loss is the mean squared error to that target: zero at the target, 1 for a unit offset.
    assert float(diffusion_loss(param, target, x0, noise, abar)) == pytest.approx(0.0, abs=1e-20)
    assert float(diffusion_loss(param, target + 1.0, x0, noise, abar)) == pytest.approx(1.0)
    # float32 data with float32 abar of shape (N,) stays float32.
    out = predict_x0(param, x_t.float(), target.float(), abar.float())
    assert out.dtype == torch.float32 and out.shape == x0.shape


@pytest.mark.parametrize("param", PARAMETERIZATIONS)
def test_min_snr_weighting_is_the_x0_loss_times_clipped_snr(param):
    """Hang et al. (2023), sec. 3.4: whatever the network predicts, the weighted loss of an x0 error delta
    is min(SNR, gamma) |delta|^2, SNR = abar / (1 - abar)."""
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(4, 1, 2, 2, generator=g, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    delta = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    abar = torch.tensor([0.999, 0.9, 0.5, 0.01], dtype=torch.float64)  # SNR 999, 9, 1, 0.0101
    a, b = abar.sqrt().reshape(-1, 1, 1, 1), (1 - abar).sqrt().reshape(-1, 1, 1, 1)
    x_t = a * x0 + b * noise
    x0_hat = x0 + delta
    eps_hat = (x_t - a * x0_hat) / b
    c_skip, c_out, _ = edm_c(b / a)
    f_hat = (x0_hat - c_skip * x_t / a) / c_out
    out = {"eps": eps_hat, "x0": x0_hat, "v": a * eps_hat - b * x0_hat, "edm": f_hat}[param]
    gamma = 5.0
    clipped = torch.tensor([5.0, 5.0, 1.0, 0.01 / 0.99], dtype=torch.float64)
    expected = (clipped * delta.square().flatten(1).mean(1)).mean()
    weighted = diffusion_loss(param, out, x0, noise, abar, gamma)
    assert float(weighted) == pytest.approx(float(expected), rel=1e-9)
    # gamma 0 is the plain mean squared error to the target.
    plain = (out - training_target(param, x0, noise, abar)).square().mean()
    assert float(diffusion_loss(param, out, x0, noise, abar, 0.0)) == pytest.approx(float(plain), rel=1e-12)
    # A floor of 1 raises the noisiest level (SNR 0.0101) to the plain x0 loss and leaves the others:
    # Salimans & Ho's (2022) truncated SNR, max(SNR, 1), capped at gamma.
    floored = torch.tensor([5.0, 5.0, 1.0, 1.0], dtype=torch.float64)
    expected = (floored * delta.square().flatten(1).mean(1)).mean()
    got = diffusion_loss(param, out, x0, noise, abar, gamma, snr_floor=1.0)
    assert float(got) == pytest.approx(float(expected), rel=1e-9)


def test_snr_floor_needs_a_cap_above_it():
    assert DiffusionConfig(min_snr_gamma=5.0, snr_floor=1.0).snr_floor == 1.0
    for gamma, floor in [(0.0, 1.0), (5.0, 6.0), (5.0, -1.0)]:
        with pytest.raises(GenlabError, match="`snr_floor`"):
            DiffusionConfig(min_snr_gamma=gamma, snr_floor=floor)


@pytest.mark.parametrize("param", PARAMETERIZATIONS)
def test_each_parameterization_is_table_1_of_karras_et_al(param):
    """Every parameterization is D(x) = c_skip x + c_out F(c_in x) for the VE variable x = x_t / sqrt(abar)
    (Karras et al. 2022, Table 1), its network input is c_in x, and its Min-SNR weight is
    min(SNR, gamma) c_out^2 (Hang et al. 2023): the class's coefficients agree with its formulas."""
    p = get_parameterization(param)
    assert get_parameterization(p) is p and p.name == param
    g = torch.Generator().manual_seed(3)
    x_t = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    out = torch.randn(x_t.shape, generator=g, dtype=torch.float64)
    abar = torch.tensor([0.999, 0.9, 0.5, 0.01], dtype=torch.float64)
    a, b = abar.sqrt().reshape(-1, 1, 1, 1), (1 - abar).sqrt().reshape(-1, 1, 1, 1)
    x, sigma = x_t / a, b / a
    c_skip, c_out, c_in = p.coefficients(abar, x_t)
    expected = {
        "eps": (1.0, -sigma, a),
        "v": (1 / (1 + sigma**2), -sigma / (1 + sigma**2).sqrt(), a),
        "x0": (0.0, 1.0, a),
        "edm": edm_c(sigma),
    }[param]
    for got, want in zip((c_skip, c_out, c_in), expected, strict=True):
        assert torch.allclose(got, torch.as_tensor(want, dtype=torch.float64).expand_as(got), atol=1e-12)
    assert torch.allclose(p.predict_x0(x_t, out, abar), c_skip * x + c_out * out, atol=1e-12)
    assert torch.allclose(p.network_input(x_t, abar), c_in * x, atol=1e-12)
    snr = abar / (1 - abar)
    weight = p.min_snr_weight(abar, 5.0)
    assert torch.allclose(weight, snr.clamp_max(5.0) * c_out.reshape(-1).square(), rtol=1e-12)
    assert torch.equal(min_snr_weight(param, abar, 5.0), weight)  # the function is the class's method


def test_parameterizations_are_found_by_name():
    assert [type(get_parameterization(n)).__name__ for n in PARAMETERIZATIONS] == ["Eps", "V", "X0", "EDM"]
    with pytest.raises(GenlabError, match="unknown parameterization 'score'; choose one of: eps, v, x0"):
        get_parameterization("score")


# ---------------------------------------------------------------- the VP denoiser


@pytest.mark.parametrize("param", PARAMETERIZATIONS)
def test_vp_denoiser_recovers_the_exact_denoiser(param):
    denoiser = VPDenoiser(gaussian_net(LINEAR, param), LINEAR, param)
    assert denoiser.sigma_min == LINEAR.sigma_min and denoiser.sigma_max == LINEAR.sigma_max
    g = torch.Generator().manual_seed(2)
    sigma = torch.tensor([0.02, 0.3, 1.0, 7.0, 150.0], dtype=torch.float64)
    x = MU + (S**2 + sigma**2).sqrt().reshape(-1, 1, 1, 1) * torch.randn(5, 1, 3, 4, generator=g).double()
    assert torch.allclose(denoiser(x, sigma), gaussian_denoiser(x, sigma), rtol=0, atol=1e-9)
    # A scalar sigma is broadcast over the batch; float32 stays float32.
    out = denoiser(x.float(), 2.0)
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), gaussian_denoiser(x, torch.full((5,), 2.0)), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- samplers on the Gaussian


# Steps per sampler for the statistical test, chosen so that each sampler's discretization bias on this
# Gaussian (computed exactly from the affine maps: heun/dpmpp-2m at 50 steps +1.1% in variance,
# euler/ddim at 500 steps -1.1% and -0.7%, ddpm at 1000 steps -0.9%) stays near one standard error of
# the variance estimate. The second-order solvers need a tenth of the steps of the first-order ones.
STEPS = {
    "heun": 50,
    "dpmpp-2m": 50,
    "euler": 500,
    "ddim": 500,
    "ddpm": 1000,
    "euler-ancestral": 500,
    "dpmpp-2m-sde": 100,
}


def check_gaussian_samples(out: torch.Tensor, n: int, mu: float = MU) -> None:
    """Sample mean within 4 standard errors (S / sqrt(n)) and sample variance within 4 standard errors
    (S^2 sqrt(2 / n), 4% for n = 20,000) of N(MU, S^2): a false alarm has odds of about 1 in 10^4 per
    check, and the seeds are fixed, so the test is deterministic."""
    assert torch.isfinite(out).all()
    mean, var = float(out.double().mean()), float(out.double().var())
    assert abs(mean - mu) < 4 * S / math.sqrt(n), mean
    assert abs(var / S**2 - 1) < 4 * math.sqrt(2 / n), var


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("model_kind", ["exact", *PARAMETERIZATIONS])
def test_sampler_draws_the_gaussian(name, model_kind):
    n = 20_000
    if model_kind == "exact":
        model = gaussian_denoiser
    else:
        model = VPDenoiser(gaussian_net(LINEAR, model_kind), LINEAR, model_kind)
    sigmas = get_sigmas(LINEAR, STEPS[name], DEFAULT_SIGMAS[name])
    # Start from the exact noised marginal N(MU, S^2 + sigma_max^2): with the pure noise N(0, sigma_max^2)
    # that real sampling uses, the mean would be off by MU S / sigma_max (0.3% here), the error of
    # assuming data with mean 0, which is not what this test is about (test_sample_convenience has MU = 0).
    z = torch.randn(n, 1, generator=torch.Generator().manual_seed(3))
    x = MU + math.sqrt(S**2 + float(sigmas[0]) ** 2) * z
    out = SAMPLERS[name](model, x, sigmas, generator=torch.Generator().manual_seed(4))
    assert out.shape == x.shape and out.dtype == torch.float32
    check_gaussian_samples(out, n)


def diffusers_samples(
    scheduler, steps: int, n: int, seed: int, vp: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples of N(MU, S^2) drawn by a diffusers scheduler on Karras sigmas with the exact eps of the
    Gaussian as its "model" (Euler works on x = x0 + sigma eps and divides the model input by sqrt(1 +
    sigma^2); DPM-Solver on the VP x_t): (samples, the scheduler's sigmas) in float64."""
    scheduler.set_timesteps(steps)
    sigmas = scheduler.sigmas.double()
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, generator=g, dtype=torch.float64)
    x = MU + math.sqrt(S**2 + float(sigmas[0]) ** 2) * z  # the exact marginal at sigma_max, in VE form
    x = x / math.sqrt(1 + float(sigmas[0]) ** 2) if vp else x
    for i, t in enumerate(scheduler.timesteps):
        sigma = float(sigmas[i])
        ve = x * math.sqrt(1 + sigma**2) if vp else x
        eps = (ve - gaussian_denoiser(ve, torch.tensor([sigma], dtype=torch.float64))) / sigma
        x = scheduler.step(eps, t, x, generator=g).prev_sample
    return x, sigmas


@pytest.mark.parametrize("name", ["euler-ancestral", "dpmpp-2m-sde"])
def test_stochastic_samplers_match_diffusers_in_distribution(name):
    """Euler ancestral against diffusers' EulerAncestralDiscreteScheduler and DPM-Solver++(2M) SDE against
    DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++"), on the same sigmas (the scheduler's
    own; Karras sigmas for DPM-Solver) and the exact
    denoiser of the Gaussian: both draw N(MU, S^2), and their means and variances agree with each other
    within the sampling error (the noise draws differ), at 10 steps, where the discretisation error is
    large (the variance is off S^2 by several percent), and at 100."""
    diffusers = pytest.importorskip("diffusers")
    n, steps = 20_000, 10
    common = dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    if name == "euler-ancestral":  # diffusers' has no Karras sigmas: its own, fed to ours too
        scheduler = diffusers.EulerAncestralDiscreteScheduler(**common)
    else:
        scheduler = diffusers.DPMSolverMultistepScheduler(
            algorithm_type="sde-dpmsolver++", solver_order=2, use_karras_sigmas=True, **common
        )
    vp = name == "dpmpp-2m-sde"
    se_mean, se_var = S / math.sqrt(n), math.sqrt(2 / n)
    for steps, seed in ((10, 21), (100, 24)):
        theirs, sigmas = diffusers_samples(scheduler, steps, n, seed=seed, vp=vp)
        assert float(sigmas[-1]) == 0.0 and len(sigmas) == steps + 1
        z = torch.randn(n, 1, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
        x = MU + math.sqrt(S**2 + float(sigmas[0]) ** 2) * z
        ours = SAMPLERS[name](gaussian_denoiser, x, sigmas, generator=torch.Generator().manual_seed(seed + 2))
        assert abs(float(ours.mean()) - float(theirs.mean())) < 4 * math.sqrt(2) * se_mean
        ratio = float(ours.var()) / float(theirs.var())
        assert abs(ratio - 1) < 4 * math.sqrt(2) * se_var, (steps, ratio)
        if steps == 10:  # far from the limit, so the agreement is the algorithms', not N(MU, S^2)'s
            assert abs(float(theirs.var()) - S**2) > 8 * se_var


def test_heun_churn_is_algorithm_2_of_karras_et_al():
    """With S_churn > 0 each step first adds noise to reach sigma_hat = (1 + gamma) sigma (Karras et al.
    2022, Algorithm 2): the model sees sigma_hat, gamma = min(S_churn / n, sqrt(2) - 1) inside [S_tmin,
    S_tmax] only, and the samples stay N(MU, S^2); S_churn = 0 is Algorithm 1, deterministic."""
    seen = []

    def model(x, sigma):
        seen.append(float(sigma[0]))
        return gaussian_denoiser(x, sigma)

    sigmas = get_sigmas(LINEAR, 10, "karras")
    x = MU + math.sqrt(S**2 + float(sigmas[0]) ** 2) * torch.randn(4, 1, generator=torch.Generator())
    sample_heun(model, x, sigmas, generator=torch.Generator(), s_churn=5.0, s_tmin=0.5, s_tmax=10.0)
    s = sigmas.tolist()
    firsts = seen[::2]  # the first evaluation of each step (the last step makes only one)
    assert len(seen) == 19
    for sigma, got in zip(s[:-1], firsts, strict=True):
        gamma = min(5.0 / 10, math.sqrt(2) - 1) if 0.5 <= sigma <= 10.0 else 0.0
        assert got == pytest.approx(sigma * (1 + gamma), rel=1e-6)
    assert any(0.5 <= sg <= 10 for sg in s) and any(sg > 10 for sg in s)
    n = 20_000
    sigmas = get_sigmas(LINEAR, 200, "karras")  # the churn's own error is first order: 6% at 50 steps
    x = MU + math.sqrt(S**2 + float(sigmas[0]) ** 2) * torch.randn(
        n, 1, generator=torch.Generator().manual_seed(25)
    )
    out = sample_heun(gaussian_denoiser, x, sigmas, generator=torch.Generator().manual_seed(26), s_churn=40.0)
    check_gaussian_samples(out, n)
    plain = sample_heun(gaussian_denoiser, x, sigmas)
    assert (out - plain).abs().mean() > 0.05  # the churn did add noise
    with pytest.raises(GenlabError, match="`s_churn` must be >= 0"):
        sample_heun(gaussian_denoiser, x, sigmas, s_churn=-1.0)


def affine_scale(sampler, sigmas: torch.Tensor) -> float:
    """A deterministic sampler on the Gaussian is an affine map x_T -> x_0; return the ratio of the output
    variance to S^2 it implies when x_T has the exact marginal (1 means no discretization error)."""
    spread = math.sqrt(S**2 + float(sigmas[0]) ** 2)
    x = torch.tensor([[MU - spread], [MU + spread]], dtype=torch.float64)
    out = sampler(gaussian_denoiser, x, sigmas)
    return (float(out[1] - out[0]) / 2) ** 2 / S**2


@pytest.mark.parametrize(("name", "order"), [("euler", 1), ("ddim", 1), ("heun", 2), ("dpmpp-2m", 2)])
def test_deterministic_sampler_convergence_order(name, order):
    """Doubling the steps divides the error by 2^order. The error is measured against the variance at
    infinitely many steps, S^4 / (S^2 + sigma_min^2): the last step to sigma = 0 returns the posterior
    mean at sigma_min, which removes that noise rather than carrying it."""
    limit = S**2 / (S**2 + LINEAR.sigma_min**2)
    errors = [
        abs(affine_scale(SAMPLERS[name], get_sigmas(LINEAR, n, "karras")) - limit) for n in (100, 200, 400)
    ]
    for coarse, fine in zip(errors, errors[1:], strict=False):
        assert coarse / fine == pytest.approx(2**order, rel=0.15), errors


def test_sample_convenience_from_unit_noise():
    # Data with mean 0, so pure noise N(0, sigma_max^2) is the right start (up to S^2 / sigma_max^2 = 4e-5).
    n, sigmas_seen = 20_000, []
    z = torch.randn(n, 1, generator=torch.Generator().manual_seed(5))
    out = sample(
        "dpmpp-2m",
        make_gaussian_denoiser(0.0),
        z,
        LINEAR,
        50,
        callback=lambda d: sigmas_seen.append(d["sigma"]),
    )
    check_gaussian_samples(out, n, mu=0.0)
    assert len(sigmas_seen) == 50 and sigmas_seen[0] == pytest.approx(LINEAR.sigma_max)


def test_number_of_model_evaluations_and_callbacks():
    calls = []

    def model(x, sigma):
        calls.append(sigma)
        return gaussian_denoiser(x, sigma)

    x = torch.zeros(2, 1)
    for name, nfe in [
        ("euler", 10), ("ddim", 10), ("ddpm", 10), ("dpmpp-2m", 10), ("heun", 19), ("euler-ancestral", 10),
        ("dpmpp-2m-sde", 10),
    ]:  # fmt: skip
        calls.clear()
        steps = []
        SAMPLERS[name](model, x, get_sigmas(LINEAR, 10), callback=steps.append, generator=torch.Generator())
        assert len(calls) == nfe, name
        assert [d["i"] for d in steps] == list(range(10))
        assert set(steps[0]) >= {"i", "x", "sigma", "denoised"}
        assert all(float(c.min()) > 0 for c in calls)  # no sampler evaluates the model at sigma = 0


# ---------------------------------------------------------------- DDIM and DDPM


def test_ddim_eta0_is_deterministic_and_draws_no_noise():
    sigmas = get_sigmas(LINEAR, 20, "discrete")
    x = LINEAR.sigma_max * torch.randn(16, 1, 4, 4, generator=torch.Generator().manual_seed(6))
    g = torch.Generator().manual_seed(7)
    g_state, global_state = g.get_state(), torch.get_rng_state()
    first = sample_ddim(gaussian_denoiser, x, sigmas, generator=g)
    assert torch.equal(g.get_state(), g_state) and torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(
        sample_ddim(gaussian_denoiser, x, sigmas, generator=torch.Generator().manual_seed(8)), first
    )
    # In the VE form, DDIM with eta = 0 is the Euler step.
    assert torch.equal(SAMPLERS["euler"](gaussian_denoiser, x, sigmas), first)


@pytest.mark.parametrize("kind", ["karras", "discrete"])
def test_ddim_inversion_round_trip(kind):
    x0 = MU + S * torch.randn(8, 1, 3, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    errors = []
    for n in (250, 500):
        sigmas = get_sigmas(LINEAR, n, kind)
        x_T = invert_ddim(gaussian_denoiser, x0, sigmas.flip(0))
        errors.append(float((sample_ddim(gaussian_denoiser, x_T, sigmas) - x0).abs().max()))
    # Plain DDIM inversion (Euler with the slope at the start of each step) is first order: the round
    # trip error is a few percent of the data's scale and halves with twice the steps.
    assert errors[0] < 0.1 and errors[0] / errors[1] == pytest.approx(2.0, rel=0.1)
    # With fixed-point refinement each step inverts the sampling step exactly.
    sigmas = get_sigmas(LINEAR, 100, kind)
    x_T = invert_ddim(gaussian_denoiser, x0, sigmas.flip(0), fixed_point_iters=10)
    assert (x_T - MU).abs().max() > 10  # it really went to high noise
    assert torch.allclose(sample_ddim(gaussian_denoiser, x_T, sigmas), x0, rtol=0, atol=1e-10)


def test_ddpm_equals_ddim_eta1_and_seeds():
    sigmas = get_sigmas(LINEAR, 30, "discrete")
    x = LINEAR.sigma_max * torch.randn(
        64, 1, 2, 2, generator=torch.Generator().manual_seed(10), dtype=torch.float64
    )
    ddpm = sample_ddpm(gaussian_denoiser, x, sigmas, generator=torch.Generator().manual_seed(11))
    ddim1 = sample_ddim(gaussian_denoiser, x, sigmas, generator=torch.Generator().manual_seed(11), eta=1.0)
    # The same noise draws through Ho et al.'s posterior (VP form) and DDIM's eta = 1 step (VE form).
    assert torch.allclose(ddpm, ddim1, rtol=0, atol=1e-9)
    again = sample_ddpm(gaussian_denoiser, x, sigmas, generator=torch.Generator().manual_seed(11))
    other = sample_ddpm(gaussian_denoiser, x, sigmas, generator=torch.Generator().manual_seed(12))
    assert torch.equal(ddpm, again)
    assert (ddpm - other).abs().mean() > 0.1


def test_ddim_eta1_matches_ddpm_variance_on_1000_steps():
    """Both stochastic samplers on all 1000 timesteps, with different noise: their variances agree with
    each other and with N(MU, S^2) within the sampling error (standard error of a variance ratio
    sqrt(2/n) = 1%; the difference of two independent ones has sqrt(2) times that)."""
    n = 20_000
    sigmas = get_sigmas(LINEAR, 1000, "discrete")
    assert sigmas.shape == (1001,)
    z = torch.randn(n, 1, generator=torch.Generator().manual_seed(13))
    x = MU + math.sqrt(S**2 + LINEAR.sigma_max**2) * z
    ddim1 = sample_ddim(gaussian_denoiser, x, sigmas, generator=torch.Generator().manual_seed(14), eta=1.0)
    ddpm = sample_ddpm(gaussian_denoiser, x, sigmas, generator=torch.Generator().manual_seed(15))
    check_gaussian_samples(ddim1, n)
    assert abs(float(ddim1.var()) / float(ddpm.var()) - 1) < 4 * math.sqrt(2) * math.sqrt(2 / n)


# ---------------------------------------------------------------- sigmas


def test_karras_sigmas_eq5():
    sigmas = get_sigmas_karras(11, 0.002, 80.0, rho=7.0)
    assert sigmas.shape == (12,) and float(sigmas[-1]) == 0.0
    assert float(sigmas[0]) == pytest.approx(80.0) and float(sigmas[-2]) == pytest.approx(0.002)
    assert bool((sigmas.diff() < 0).all())
    middle = (80.0 ** (1 / 7) + 0.5 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    assert float(sigmas[5]) == pytest.approx(middle, rel=1e-12)
    assert get_sigmas_karras(1, 0.002, 80.0).tolist() == pytest.approx([80.0, 0.0])


def test_discrete_sigmas_trailing():
    for n in (1, 7, 50, 1000):
        sigmas = get_sigmas_discrete(LINEAR, n)
        assert sigmas.shape == (n + 1,) and float(sigmas[-1]) == 0.0
        assert float(sigmas[0]) == LINEAR.sigma_max
        assert bool((sigmas.diff() < 0).all())
        t = LINEAR.sigma_to_t(sigmas[:-1])
        assert torch.equal(t, t.round())  # on the training timesteps
    assert torch.equal(get_sigmas_discrete(LINEAR, 1000)[:-1], LINEAR.sigmas.flip(0))
    assert LINEAR.sigma_to_t(get_sigmas_discrete(LINEAR, 10)[:-1]).tolist() == list(range(999, 0, -100))


# ---------------------------------------------------------------- guidance


class CountingDenoiser:
    """A toy conditional denoiser D(x; sigma, c) = x / (1 + sigma^2) + c (the label per sample)."""

    def __init__(self):
        self.batch_sizes = []

    def __call__(self, x, sigma, class_labels):
        self.batch_sizes.append(x.shape[0])
        sigma = sigma_view(sigma, x)
        return x / (1 + sigma**2) + class_labels.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


def sigma_view(sigma, x):
    sigma = torch.as_tensor(sigma, dtype=x.dtype)
    return sigma.reshape(-1, *([1] * (x.ndim - 1))) if sigma.ndim else sigma


def test_cfg_scales():
    x = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(16))
    sigma = torch.tensor([0.5, 1.0, 2.0])
    cond, uncond = {"class_labels": torch.tensor([1, 2, 3])}, {"class_labels": torch.tensor([10, 10, 10])}
    plain = CountingDenoiser()
    d_c, d_u = plain(x, sigma, **cond), plain(x, sigma, **uncond)

    model = CountingDenoiser()
    assert torch.equal(CFGDenoiser(model, 1.0, cond, uncond)(x, sigma), d_c)
    assert model.batch_sizes == [3]  # only the conditional batch
    model = CountingDenoiser()
    assert torch.equal(CFGDenoiser(model, 0.0, cond, uncond)(x, sigma), d_u)
    assert model.batch_sizes == [3]
    model = CountingDenoiser()
    guided = CFGDenoiser(model, 3.0, cond, uncond)(x, sigma)
    assert model.batch_sizes == [6]  # both halves in one batch
    assert torch.allclose(guided, d_u + 3.0 * (d_c - d_u), rtol=0, atol=1e-6)
    # A scalar sigma as well.
    assert torch.allclose(
        CFGDenoiser(model, 2.0, cond, uncond)(x, 1.5), 2 * plain(x, 1.5, **cond) - plain(x, 1.5, **uncond)
    )


def test_cfg_scale_one_equals_conditional_sampling():
    x = LINEAR.sigma_max * torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(17))
    cond, uncond = {"class_labels": torch.tensor([1, 2, 3])}, {"class_labels": torch.tensor([0, 0, 0])}
    sigmas = get_sigmas(LINEAR, 8)
    for name in SAMPLERS:
        guided = SAMPLERS[name](
            CFGDenoiser(CountingDenoiser(), 1.0, cond, uncond),
            x,
            sigmas,
            generator=torch.Generator().manual_seed(1),
        )
        plain = SAMPLERS[name](
            CountingDenoiser(), x, sigmas, extra_args=cond, generator=torch.Generator().manual_seed(1)
        )
        assert torch.equal(guided, plain), name


def test_denoiser_wrappers_each_do_one_thing():
    """The wrappers generate() composes: a bound condition, guidance chosen by scale, the known pixels of an
    inpainting, the clamp to the data range."""
    x = 3 * torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(18))
    sigma = torch.tensor([0.5, 2.0])
    cond, uncond = {"class_labels": torch.tensor([1, 2])}, {"class_labels": torch.tensor([5, 5])}
    plain = CountingDenoiser()
    d_c, d_u = plain(x, sigma, **cond), plain(x, sigma, **uncond)
    assert torch.equal(ConditionedDenoiser(plain, cond)(x, sigma), d_c)
    # guided(): none without a condition, the bound condition at scale 1, else classifier-free guidance
    assert guided(plain, None, None, 3.0) is plain
    assert isinstance(guided(plain, cond, None, 1.0), ConditionedDenoiser)
    assert torch.allclose(guided(plain, cond, uncond, 3.0)(x, sigma), d_u + 3.0 * (d_c - d_u), atol=1e-6)
    with pytest.raises(GenlabError, match="unconditional"):
        guided(plain, cond, None, 3.0)
    # inpainting: the known values where the mask is 1, the denoiser's elsewhere
    known, mask = torch.full_like(x, 7.0), torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 1, 2, 2)
    inpainted = InpaintingDenoiser(ConditionedDenoiser(plain, cond), known, mask)(x, sigma)
    assert torch.equal(inpainted, torch.where(mask.bool(), known, d_c))
    clamped = ClampedDenoiser(ConditionedDenoiser(plain, cond))(x, sigma)
    assert torch.equal(clamped, d_c.clamp(-1, 1)) and not torch.equal(clamped, d_c)


# ---------------------------------------------------------------- shapes, dtypes, errors


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_shapes_and_dtypes(name, dtype):
    model = VPDenoiser(gaussian_net(LINEAR, "eps"), LINEAR, "eps")
    z = torch.randn(3, 1, 7, 9, generator=torch.Generator().manual_seed(18)).to(dtype)
    out = sample(name, model, z, LINEAR, 4, generator=torch.Generator().manual_seed(2))
    assert out.shape == (3, 1, 7, 9) and out.dtype == dtype and torch.isfinite(out).all()
    x_T = invert_ddim(model, out, get_sigmas(LINEAR, 4).flip(0))
    assert x_T.shape == out.shape and x_T.dtype == dtype


def test_bad_arguments_raise_clear_errors():
    z = torch.randn(2, 1, 3, 3)
    with pytest.raises(GenlabError, match="steps"):
        sample("euler", gaussian_denoiser, z, LINEAR, 0)
    with pytest.raises(GenlabError, match="ddpm, ddim, dpmpp-2m, euler, euler-ancestral, heun, dpmpp-2m-sde"):
        sample("plms", gaussian_denoiser, z, LINEAR, 10)
    with pytest.raises(GenlabError, match="karras, discrete"):
        get_sigmas(LINEAR, 10, "uniform")
    with pytest.raises(GenlabError, match="steps"):
        get_sigmas_karras(0, 0.1, 10.0)
    with pytest.raises(GenlabError, match="at most 1000"):
        get_sigmas_discrete(LINEAR, 1001)
    with pytest.raises(GenlabError, match="linear, cosine, sigmoid"):
        NoiseSchedule(ScheduleConfig(kind="quadratic"))
    with pytest.raises(GenlabError, match="timesteps"):
        NoiseSchedule(ScheduleConfig(timesteps=1))
    with pytest.raises(GenlabError, match="eps, v, x0"):
        VPDenoiser(gaussian_denoiser, LINEAR, "score")
    with pytest.raises(GenlabError, match="eps, v, x0"):
        training_target("epsilon", z, z, torch.ones(2))
    with pytest.raises(GenlabError, match="eta"):
        sample("euler", gaussian_denoiser, z, LINEAR, 10, eta=0.5)
    with pytest.raises(GenlabError, match="eta"):
        sample("ddim", gaussian_denoiser, z, LINEAR, 10, eta=-1.0)
    with pytest.raises(GenlabError, match="keywords"):
        CFGDenoiser(gaussian_denoiser, 2.0, {"class_labels": torch.zeros(2)}, {"context": torch.zeros(2)})


# ---------------------------------------------------------------- starting from images (SDEdit)


def test_discrete_sigmas_from_a_start_timestep():
    sigmas = get_sigmas_discrete(LINEAR, 5, start=199)
    assert float(sigmas[0]) == float(LINEAR.sigmas[199]) and float(sigmas[-1]) == 0.0
    assert LINEAR.sigma_to_t(sigmas[:-1]).tolist() == [199, 159, 119, 79, 39]
    karras = get_sigmas(LINEAR, 5, "karras", start=199)
    assert float(karras[0]) == pytest.approx(float(LINEAR.sigmas[199])) and bool((karras.diff() < 0).all())
    with pytest.raises(GenlabError, match="at most 200 steps"):
        get_sigmas_discrete(LINEAR, 201, start=199)


def test_sdedit_from_data_keeps_the_data_distribution():
    """Data noised to timestep t has the marginal at t, so the exact reverse process from there (DDPM on
    every timestep below t) returns the data distribution N(MU, S^2)."""
    n = 20_000
    x0 = MU + S * torch.randn(n, 1, generator=torch.Generator().manual_seed(6))
    z = torch.randn(n, 1, generator=torch.Generator().manual_seed(7))
    out = sample(
        "ddpm",
        gaussian_denoiser,
        z,
        LINEAR,
        300,
        x0=x0,
        start=299,
        generator=torch.Generator().manual_seed(8),
    )
    check_gaussian_samples(out, n)
    near = sample("ddim", gaussian_denoiser, z[:100], LINEAR, 5, x0=x0[:100], start=9)
    assert (near - x0[:100]).abs().mean() < 0.1  # a small start keeps each sample close to its image


def test_generate_from_images_strength_zero_is_the_identity():
    from genlab.diffusion.generate import generate
    from genlab.nn.unet import UNet, UNetConfig

    torch.manual_seed(0)
    net = UNet(
        UNetConfig(in_channels=1, image_size=8, base_channels=32, channel_mults=(1,), attention_levels=())
    )
    images = torch.rand(2, 1, 8, 8)
    same = generate(net, LINEAR, "eps", (2, 1, 8, 8), init_images=images, strength=0.0, steps=5)
    assert torch.equal(same, images)
    out = generate(net, LINEAR, "eps", (2, 1, 8, 8), init_images=images, strength=0.3, steps=50)
    assert out.shape == images.shape and 0 <= out.min() and out.max() <= 1
    with pytest.raises(GenlabError, match="strength must lie"):
        generate(net, LINEAR, "eps", (2, 1, 8, 8), init_images=images, strength=1.5)
    with pytest.raises(GenlabError, match="init images have shape"):
        generate(net, LINEAR, "eps", (3, 1, 8, 8), init_images=images, strength=0.5)
