"""Mixed noise (PYoCo) as a change of variables: the covariance it gives, and that training and sampling map
clips the same way (tests/test_video.py: a run keeps it from the CLI to its samples)."""

from __future__ import annotations

import pytest
import torch

from genlab.data import DataConfig
from genlab.diffusion.config import DiffusionConfig
from genlab.errors import GenlabError
from genlab.nn.pixels import to_model_space
from genlab.train.engine import Batch
from genlab.video.config import VideoConfig
from genlab.video.generate import generate_clips
from genlab.video.mixed_noise import correlate, decorrelate, mixing_scales
from genlab.video.task import VideoDiffusionTask


@pytest.mark.parametrize("rho", [0.3, 0.75])
def test_correlated_white_noise_is_pyocos_mixed_noise(rho):
    frames, n = 6, 200_000
    z = torch.randn(n, frames, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mixed = correlate(z, rho)
    # PYoCo's construction: eps_i = sqrt(rho) eps_shared + sqrt(1 - rho) eps_ind,i.
    expected = (1 - rho) * torch.eye(frames, dtype=torch.float64) + rho
    torch.testing.assert_close(torch.cov(mixed.T), expected, atol=0.01, rtol=0)
    torch.testing.assert_close(decorrelate(mixed, rho), z)
    assert mixing_scales(rho, frames) == pytest.approx(((1 - rho + rho * frames) ** 0.5, (1 - rho) ** 0.5))
    assert correlate(z, 0.0) is z and decorrelate(z, 0.0) is z


class Oracle(torch.nn.Module):
    """An x0-predicting network that knows the one clip of its data: it returns it whatever it is shown."""

    def __init__(self, y0: torch.Tensor) -> None:
        super().__init__()
        self.y0 = torch.nn.Parameter(y0.clone(), requires_grad=False)

    def forward(self, x, t, **cond):
        return self.y0.expand_as(x)


def test_training_and_sampling_map_clips_alike():
    """The loss sees decorrelated clips (an oracle of the decorrelated clip has zero loss, one of the clip
    itself does not), and sampling with that oracle gives back the clip, at every step of the callback."""
    rho = 0.75
    task = VideoDiffusionTask(
        DataConfig("moving-shapes", val_fraction=0.005),
        DiffusionConfig(cond="none", parameterization="x0"),
        VideoConfig(noise_correlation=rho),
        base_channels=8, channel_mults=(1,), attention_levels=(), head_dim=8, groups=4, stack_frames=8,
    )  # fmt: skip
    clip = task.train_data.clips[:1]
    x0 = to_model_space(clip)
    batch = Batch(clip, None, task.train_data.captions[:1], torch.arange(1))
    g = torch.Generator().manual_seed(0)
    assert float(task.loss(Oracle(decorrelate(x0, rho)), batch, g)[0]) < 1e-10
    assert float(task.loss(Oracle(x0), batch, g)[0]) > 1e-3
    seen = []
    clips = generate_clips(Oracle(decorrelate(x0, rho)), task.schedule, "x0", tuple(clip.shape), steps=5,
                           sampler="ddim", noise_correlation=rho, callback=seen.append)  # fmt: skip
    torch.testing.assert_close(clips, clip, atol=1e-5, rtol=0)
    torch.testing.assert_close(seen[-1]["denoised"], x0, atol=1e-5, rtol=0)  # shown as clips
    with pytest.raises(GenlabError, match="first frame"):
        generate_clips(Oracle(x0), task.schedule, "x0", tuple(clip.shape), steps=2, noise_correlation=rho,
                       first_frame=clip[:, 0])  # fmt: skip


def test_mixed_noise_refuses_per_frame_noise_levels():
    for bad in (dict(frame_cond=0.3), dict(image_share=0.1)):
        with pytest.raises(GenlabError, match="noise levels of their own"):
            VideoConfig(noise_correlation=0.5, **bad)
    with pytest.raises(GenlabError, match=r"\[0, 1\)"):
        VideoConfig(noise_correlation=1.0)
