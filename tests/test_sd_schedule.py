"""Stable Diffusion's schedule in genlab: scaled-linear betas and diffusers' timestep spacings (issue 21)."""

from __future__ import annotations

import pytest
import torch

from genlab.diffusion.samplers import get_sigmas_discrete
from genlab.diffusion.schedules import NoiseSchedule, ScheduleConfig
from genlab.errors import GenlabError

SD = {"beta_start": 0.00085, "beta_end": 0.012, "timesteps": 1000, "kind": "scaled_linear"}


def test_scaled_linear_betas_are_squares_of_a_linear_ramp():
    betas = NoiseSchedule(ScheduleConfig(**SD)).betas
    assert betas[0].item() == pytest.approx(0.00085) and betas[-1].item() == pytest.approx(0.012)
    roots = betas.sqrt()
    assert torch.allclose(roots[1:] - roots[:-1], roots.diff().mean().expand(999), rtol=1e-9)


@pytest.mark.parametrize(("spacing", "offset"), [("leading", 1), ("trailing", 0), ("linspace", 0)])
@pytest.mark.parametrize("steps", [1, 4, 20, 50])
def test_spacings_equal_diffusers_euler_sigmas(spacing, offset, steps):
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        timestep_spacing=spacing, steps_offset=offset,
    )  # fmt: skip
    ref.set_timesteps(steps)
    schedule = NoiseSchedule(ScheduleConfig(**SD, spacing=spacing, steps_offset=offset))
    ours = get_sigmas_discrete(schedule, steps)
    # One linspace step: diffusers' starts at timestep 0 (no noise), ours at T-1 (its betas are float32)
    if spacing == "linspace" and steps == 1:
        assert ref.sigmas[0].item() == pytest.approx(schedule.sigmas[0].item(), rel=1e-4)
        assert ours[0].item() == pytest.approx(schedule.sigma_max)
        return
    # diffusers interpolates sigma linearly between timesteps, genlab log sigma (k-diffusion): the
    # fractional timesteps of "linspace" differ by that alone
    tol = 2e-3 if spacing == "linspace" else 1e-5
    torch.testing.assert_close(ours.float(), ref.sigmas.float(), rtol=tol, atol=1e-6)


def test_a_bad_spacing_or_offset_is_one_line():
    with pytest.raises(GenlabError, match="unknown timestep spacing 'middle'"):
        NoiseSchedule(ScheduleConfig(**SD, spacing="middle"))
    with pytest.raises(GenlabError, match="steps_offset must be a whole number in \\[0, 1000\\)"):
        NoiseSchedule(ScheduleConfig(**SD, steps_offset=1000))
    with pytest.raises(GenlabError, match="timesteps must be an integer between 2 and"):
        NoiseSchedule(ScheduleConfig(**{**SD, "timesteps": 10**9}))


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (
            {"beta_schedule": "squaredcos_cap_v2"},
            "`beta_schedule` 'squaredcos_cap_v2' is not one genlab knows",
        ),
        ({"trained_betas": [0.1, 0.2]}, "explicit `trained_betas` are not supported"),
        ({"prediction_type": "flow"}, "`prediction_type` 'flow' is not one of"),
        ({"timestep_spacing": "middle"}, "`timestep_spacing` 'middle' is not one of"),
        ({"num_train_timesteps": "1000"}, "`num_train_timesteps` must be a whole number"),
        ({"num_train_timesteps": 10**9}, "schedule timesteps must be an integer between 2 and"),
    ],
)
def test_a_scheduler_config_genlab_cannot_follow_is_one_line(change, said):
    from genlab.diffusion.stable_diffusion import schedule_from_config

    config = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1}
    assert schedule_from_config(config, "x")[0].spacing == "leading"  # diffusers' default spacing
    with pytest.raises(GenlabError, match="^x: " + said.replace("(", "\\(").replace("[", "\\[")):
        schedule_from_config(config | change, "x")
