"""The autoregressive video U-Net (MCVD's past frames as input planes): what it reads, the loss it is trained
on, frame-by-frame sampling against a random walk whose conditionals are known, the CLI, and the CLIP whose
image tower sees whole clips (the text tower of the video recipe)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from genlab.cli import cli
from genlab.data import DataConfig, load_clips
from genlab.diffusion.config import DiffusionConfig
from genlab.diffusion.schedules import NoiseSchedule
from genlab.errors import GenlabError
from genlab.nn.unet import UNetConfig
from genlab.nn.video_unet import VideoUNet, VideoUNetConfig
from genlab.train.engine import Batch
from genlab.video.config import VideoConfig
from genlab.video.generate import generate_clips, past_window
from genlab.video.task import VideoDiffusionTask

TINY = UNetConfig(in_channels=1, image_size=4, base_channels=8, channel_mults=(1, 2), attention_levels=(1,),
                  head_dim=8, groups=4)  # fmt: skip
SHORT = ["--steps", "2", "--batch-size", "4", "--val-fraction", "0.005", "--eval-every", "0",
         "--sample-every", "0", "--eval-samples", "0", "--sample-steps", "2", "--no-progress"]  # fmt: skip
NET = ["--base-channels", "16", "--channel-mults", "1,2", "--attention-levels", "1"]


def test_the_past_window_holds_the_nearest_frame_last_and_marks_missing_ones():
    frames = [torch.full((2, 1, 4, 4), float(i)) for i in range(3)]
    past, given = past_window(frames[:1], 2, (2, 1, 4, 4), torch.device("cpu"))
    assert given.tolist() == [[False, True]] * 2 and past[:, 1].eq(0).all() and past[:, 0].eq(0).all()
    past, given = past_window(frames, 2, (2, 1, 4, 4), torch.device("cpu"))
    assert given.all() and past[:, 0].eq(1).all() and past[:, 1].eq(2).all()  # frames 1 and 2, 2 last
    past, given = past_window([], 2, (2, 1, 4, 4), torch.device("cpu"))
    assert not given.any()


def test_the_network_reads_given_past_frames_and_not_the_pixels_of_missing_ones():
    torch.manual_seed(0)
    net = VideoUNet(VideoUNetConfig(unet=TINY, past_frames=2)).eval()
    for p in net.parameters():  # the zero-initialised last layers would hide every input
        torch.nn.init.normal_(p, std=0.3)
    x, t = torch.randn(3, 1, 1, 4, 4), torch.tensor([10, 500, 900])
    past, given = torch.randn(3, 2, 1, 4, 4), torch.tensor([[False, True]] * 3)
    out = net(x, t, past=past, past_given=given)
    assert out.shape == (3, 1, 1, 4, 4)
    other = past.clone()
    other[:, 0] = torch.randn(3, 1, 4, 4)  # a missing frame's pixels change nothing
    assert torch.allclose(net(x, t, past=other, past_given=given), out)
    other[:, 1] = torch.randn(3, 1, 4, 4)  # a given one does
    assert not torch.allclose(net(x, t, past=other, past_given=given), out)
    none = net(x, t)  # no past at all: the first frame of a clip
    assert torch.allclose(none, net(x, t, past=past, past_given=torch.zeros(3, 2, dtype=torch.bool)))
    blind = VideoUNet(VideoUNetConfig(unet=TINY, past_frames=2, temporal=False)).eval()
    blind.load_state_dict(net.state_dict())  # the ablation: the same weights, the past never seen
    assert torch.allclose(blind(x, t, past=other, past_given=given), none)
    with pytest.raises(GenlabError, match="one frame at a time"):
        net(torch.randn(3, 2, 1, 4, 4), t)
    with pytest.raises(GenlabError, match="`past` must be"):
        net(x, t, past=past[:, :1], past_given=given[:, :1])
    with pytest.raises(GenlabError, match="set one of them to 0"):
        VideoUNetConfig(unet=TINY, past_frames=2, stack_frames=4)


class RandomWalk(torch.nn.Module):
    """The exact x0 estimate of clips whose frames walk: frame 0 ~ N(0, var), frame k ~ N(frame k-1 +
    step, var) per pixel. With x0 ~ N(mu, var) and x_t = sqrt(abar) x0 + sqrt(1 - abar) eps,
    E[x0 | x_t] = mu + sqrt(abar) var (x_t - sqrt(abar) mu) / (abar var + 1 - abar)."""

    def __init__(self, schedule: NoiseSchedule, step: float, var: float) -> None:
        super().__init__()
        self.config = VideoUNetConfig(unet=TINY, past_frames=2)  # what generate_clips reads
        self.weight = torch.nn.Parameter(torch.zeros(()))  # where the sampler finds the device
        self.schedule, self.step, self.var = schedule, step, var

    def forward(self, x, t, past=None, past_given=None, **cond):
        sigma = self.schedule.t_to_sigma(t.float()).reshape(-1, 1, 1, 1)
        abar = 1 / (1 + sigma**2)
        if past is None:
            mu = torch.zeros_like(x[:, 0])
        else:
            mu = torch.where(past_given[:, -1, None, None, None], past[:, -1] + self.step, 0.0)
        x_t = x[:, 0]
        est = mu + abar.sqrt() * self.var * (x_t - abar.sqrt() * mu) / (abar * self.var + 1 - abar)
        return est[:, None]


def test_frame_by_frame_sampling_draws_the_walk_of_known_conditionals():
    """Every step of the walk has mean `step` and variance `var`, and the steps are independent: the
    sampler draws each frame from its conditional given the frame before it (broken on purpose, with the
    past read nearest-first, the means are off)."""
    schedule = NoiseSchedule()
    step, var = 0.1, 0.01
    net = RandomWalk(schedule, step, var)
    g = torch.Generator().manual_seed(0)  # DPM-Solver++ (DDPM's last step narrows so small a variance)
    clips = generate_clips(net, schedule, "x0", (400, 4, 1, 4, 4), steps=100, sampler="dpmpp-2m", generator=g)
    x = clips * 2 - 1  # model space
    assert x[:, 0].mean().abs() < 0.01 and abs(float(x[:, 0].var()) - var) < 0.1 * var
    steps = (x[:, 1:] - x[:, :-1]).transpose(0, 1).reshape(3, -1)  # (3 steps, every pixel of every clip)
    assert torch.allclose(steps.mean(1), torch.full((3,), step), atol=0.01), steps.mean(1)
    assert torch.allclose(steps.var(1), torch.full((3,), var), rtol=0.05), steps.var(1)
    assert abs(float(torch.corrcoef(steps[:2])[0, 1])) < 0.05
    first = torch.full((10, 1, 4, 4), 0.3)
    clips = generate_clips(net, schedule, "x0", (10, 3, 1, 4, 4), first_frame=first, steps=20, sampler="ddpm")
    assert torch.equal(clips[:, 0], first)
    assert abs(float((clips[:, 1] - clips[:, 0]).mean() * 2) - step) < 0.03
    calls = []
    generate_clips(net, schedule, "x0", (2, 3, 1, 4, 4), steps=4, sampler="ddpm", callback=calls.append)
    assert [c["i"] for c in calls] == [-1, *range(12)]  # the steps of the three frames counted on
    assert all(c["x"].shape == (2, 3, 1, 4, 4) for c in calls)
    with pytest.raises(GenlabError, match="one frame at a time"):
        generate_clips(net, schedule, "x0", (2, 3, 1, 4, 4), steps=2, noise_correlation=0.5)


def test_past_guidance_leaves_the_past_out_of_the_unconditional_side_only():
    schedule = NoiseSchedule()
    net = RandomWalk(schedule, 0.1, 0.01)
    seen, forward = [], net.forward
    net.forward = lambda x, t, **kw: (seen.append(kw["past_given"]), forward(x, t, **kw))[1]
    shape = (2, 3, 1, 4, 4)
    generate_clips(
        net, schedule, "x0", shape, steps=2, sampler="ddpm", guidance_scale=2.0, past_guidance=True
    )
    later = [given for given in seen if given.any()]  # frames 1 and 2: the joint batch [uncond; cond]
    assert len(later) == 4 and all(not g[:2].any() and g[2:, -1].all() for g in later)
    seen.clear()
    generate_clips(net, schedule, "x0", shape, steps=2, sampler="ddpm", guidance_scale=2.0)
    assert all(len(g) == 2 for g in seen)  # nothing to guide toward: the conditional prediction alone


class PastRecorder(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, []

    @property
    def config(self):
        return self.net.config

    @property
    def unet(self):
        return self.net.unet

    def forward(self, x, t, **kw):
        self.calls.append(kw)
        return self.net(x, t, **kw)


def test_each_clip_is_scored_on_one_frame_given_the_frames_before_it():
    torch.manual_seed(0)
    task = VideoDiffusionTask(
        DataConfig("moving-shapes"), DiffusionConfig(cond="text"), VideoConfig(frame_cond=0.5),
        text_options=dict(width=16, layers=1, heads=2), base_channels=8, channel_mults=(1, 2),
        attention_levels=(1,), head_dim=8, groups=4, past_frames=2,
    )  # fmt: skip
    d = task.train_data.subset(range(16))
    x0 = d.clips * 2 - 1
    rec = PastRecorder(task.model)
    batch = Batch(d.clips, None, d.captions, torch.arange(16))
    loss, _ = task.loss(rec, batch, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    past, given = rec.calls[0]["past"], rec.calls[0]["past_given"]
    firsts = 0
    for i in range(16):
        if not given[i].any():  # scored on frame 0, from the prompt alone
            firsts += 1
            continue
        j = next(j for j in range(8) if torch.equal(past[i, 1], x0[i, j]))  # the frame just before
        assert given[i].tolist() == [j >= 1, True]
        if j >= 1:
            assert torch.equal(past[i, 0], x0[i, j - 1])
    assert 0 < firsts < 16
    task.video.past_noise = 0.5  # GameNGen's augmentation: noised past frames in training only
    rec.calls.clear()
    task.loss(rec, batch, torch.Generator().manual_seed(0))
    noisy = rec.calls[0]["past"]
    assert not torch.allclose(noisy[given], past[given]) and (noisy - past).abs().max() < 3.0
    rec.calls.clear()
    task._forward(rec, x0, None, d.captions, torch.Generator().manual_seed(0), train=False)
    assert any(torch.equal(rec.calls[0]["past"][i, 1], x0[i, j]) for i in range(16) for j in range(8))
    with pytest.raises(GenlabError, match="set `frame_cond` above 0"):
        VideoDiffusionTask(DataConfig("moving-shapes"), DiffusionConfig(cond="none"), VideoConfig(),
                           base_channels=8, channel_mults=(1, 2), attention_levels=(1,), head_dim=8,
                           groups=4, past_frames=2)  # fmt: skip


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _fail(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    return result.output


def test_a_clip_clip_and_an_autoregressive_run_from_the_command_line(tmp_path):
    """`genlab train clip --data moving-shapes` sees whole clips (frames stacked as channels) and its text
    tower serves an autoregressive text-to-video run, which samples any length and continues a frame."""
    clip = tmp_path / "clip"
    result = _invoke("train", "clip", "--data", "moving-shapes", "--steps", "2", "--batch-size", "8",
                     "--val-fraction", "0.05", "--eval-every", "0", "--sample-every", "2", "--no-progress",
                     "--out", str(clip))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((clip / "config.json").read_text())["model"]["in_channels"] == 24  # 8 frames of RGB
    assert list((clip / "samples").glob("*.png"))
    run = tmp_path / "ar"
    result = _invoke("train", "video", *NET, "--past-frames", "2", "--frame-cond", "0.75", "--text-encoder",
                     f"clip:{clip}", "--past-guidance", "--out", str(run), *SHORT)  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    video = config["model"]["video"]
    assert video["past_frames"] == 2 and video["unet"]["in_channels"] == 3
    assert config["video"]["past_guidance"] is True
    out = tmp_path / "clip.gif"
    result = _invoke("sample", str(run), "a small red circle moving right", "--frames", "11", "--n", "2",
                     "--steps", "2", "--out", str(out),
                     "--trajectory", str(tmp_path / "traj.png"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert Image.open(out).n_frames == 11
    first = tmp_path / "first.png"
    Image.new("RGB", (32, 32), (200, 20, 20)).save(first)
    result = _invoke("sample", str(run), "a small red circle moving right", "--n", "1", "--steps", "2",
                     "--first-frame", str(first), "--no-past-guidance",
                     "--out", str(tmp_path / "i2v.png"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "set --frame-cond above 0" in _fail(
        "train", "video", *NET, "--past-frames", "2", "--out", str(tmp_path / "r"), *SHORT
    )
    assert "set one of them to 0" in _fail(
        "train", "video", *NET, "--past-frames", "2", "--stack-frames", "8", "--frame-cond", "0.5",
        "--out", str(tmp_path / "s"), *SHORT,
    )  # fmt: skip


def test_stacked_clips_keep_their_captions_and_frames_as_channels():
    clips = load_clips("moving-shapes", "val").subset(range(3))
    images = clips.stacked()
    assert images.images.shape == (3, 24, 32, 32) and images.captions == clips.captions
    assert torch.equal(images.images[:, 3:6], clips.clips[:, 1])  # frame 1's channels
