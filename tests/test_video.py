"""Video diffusion end to end: the training loss (one noise level per clip, image rows, first frames given
and left out of the loss), image-to-video conditioning, generate_clips, the pipeline and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from genlab.cli import cli
from genlab.data import DataConfig
from genlab.diffusion.config import DiffusionConfig
from genlab.errors import GenlabError
from genlab.nn.video_unet import VideoUNet
from genlab.train.engine import Batch
from genlab.video.config import VideoConfig
from genlab.video.generate import FrameConditioned, generate_clips, with_first_frame
from genlab.video.task import VideoDiffusionTask

TINY = dict(base_channels=8, channel_mults=(1, 2), attention_levels=(1,), head_dim=8, groups=4)
# A batch of 4 and 20 held-out clips (the final validation takes up to 200): the CLI, not the quality.
SHORT = ["--steps", "2", "--batch-size", "4", "--val-fraction", "0.005", "--eval-every", "0",
         "--sample-every", "0", "--eval-samples", "0", "--sample-steps", "2", "--no-progress"]  # fmt: skip
NET = ["--base-channels", "16", "--channel-mults", "1,2", "--attention-levels", "1", "--temporal-levels", "1"]


def _task(cond: str = "text", video: VideoConfig | None = None, **kw) -> VideoDiffusionTask:
    torch.manual_seed(0)
    options = {**TINY, "temporal_levels": (0, 1), **kw}
    diffusion = DiffusionConfig(cond=cond, sample_steps=2)
    return VideoDiffusionTask(
        DataConfig("moving-shapes"),
        diffusion,
        video,
        text_options=dict(width=16, layers=1, heads=2),
        **options,
    )


def _batch(task: VideoDiffusionTask, n: int = 3) -> Batch:
    d = task.train_data.subset(range(n))
    return Batch(d.clips, d.labels, d.captions, torch.arange(n))


class Recorder(torch.nn.Module):
    """Stands in for a network: records what it is called with and returns a fixed output."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = torch.nn.Parameter(out)
        self.calls: list[dict] = []

    def forward(self, x, t, **cond):
        self.calls.append({"x": x.detach().clone(), "t": t.detach().clone(), **cond})
        return self.out


def test_with_first_frame_shows_given_clips_their_frame_clean_at_timestep_zero():
    x = torch.randn(2, 4, 3, 8, 8)
    net = Recorder(torch.zeros(2, 4, 3, 8, 8))
    frame = torch.rand(2, 3, 8, 8)
    given = torch.tensor([True, False])
    with_first_frame(net, "eps", 0.9999, x, torch.tensor([500.0, 700.0]), frame, given)
    seen = net.calls[0]
    assert torch.equal(seen["x"][0, 0], frame[0])  # eps networks take x_t itself: the clean frame
    assert torch.equal(seen["x"][1], x[1]) and torch.equal(seen["x"][0, 1:], x[0, 1:])
    assert seen["t"].tolist() == [[0.0, 500.0, 500.0, 500.0], [700.0] * 4]
    with_first_frame(net, "eps", 0.9999, x, torch.tensor([500.0, 700.0]), frame, torch.tensor([False, False]))
    assert net.calls[1]["t"].tolist() == [500.0, 700.0]  # nothing given: the network's own call


def test_the_loss_leaves_a_given_first_frame_out():
    task = _task(cond="none", video=VideoConfig(frame_cond=0.999))  # every clip given its first frame
    net = Recorder(torch.zeros(3, 8, 3, 32, 32))
    loss, _ = task.loss(net, _batch(task), torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.count_nonzero(net.out.grad[:, 0]) == 0 and torch.count_nonzero(net.out.grad[:, 1:]) > 0
    assert (net.calls[0]["t"][:, 0] == 0).all() and (net.calls[0]["t"][:, 1] > 0).all()


def test_image_rows_draw_a_noise_level_per_frame_and_see_no_other_frame():
    task = _task(cond="none", video=VideoConfig(image_share=0.999))
    net = Recorder(torch.zeros(3, 8, 3, 32, 32))
    task.loss(net, _batch(task), torch.Generator().manual_seed(0))
    seen = net.calls[0]
    assert seen["temporal"].tolist() == [False, False, False]
    assert all(len(set(row.tolist())) > 1 for row in seen["t"])  # independent images, own noise levels
    task = _task(cond="none")
    net = Recorder(torch.zeros(3, 8, 3, 32, 32))
    task.loss(net, _batch(task), torch.Generator().manual_seed(0))
    assert net.calls[0]["temporal"] is True and all(len(set(r.tolist())) == 1 for r in net.calls[0]["t"])


def test_training_steps_lower_the_loss_of_a_text_to_video_network():
    task = _task()
    d = task.train_data.subset(range(2))
    batch = Batch(d.clips[:, :4], d.labels, d.captions, torch.arange(2))  # 2 clips of 4 frames
    opt = torch.optim.AdamW(task.model.parameters(), 3e-3)
    losses = []
    for _ in range(15):
        loss, _ = task.loss(task.model, batch, torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses


def test_generated_clips_start_exactly_at_a_given_first_frame_and_guidance_sees_it():
    task = _task(cond="none")
    net = task.model
    frame = torch.rand(2, 3, 32, 32)
    shape = (2, 5, 3, 32, 32)
    clips = generate_clips(net, task.schedule, "eps", shape, first_frame=frame, steps=2, guidance_scale=2.0)
    assert clips.shape == shape and torch.equal(clips[:, 0], frame)
    assert clips.min() >= 0 and clips.max() <= 1
    wrapped = FrameConditioned(net, "eps", task.schedule)
    assert wrapped.config is net.config and list(wrapped.parameters())
    with pytest.raises(GenlabError, match="first frame must be"):
        generate_clips(net, task.schedule, "eps", shape, first_frame=frame[:1], steps=2)
    with pytest.raises(GenlabError, match=r"\(N, T, C, H, W\)"):
        generate_clips(net, task.schedule, "eps", (2, 3, 32, 32), steps=2)


def test_factorized_sampling_continues_the_first_frame_of_a_clip_drawn_from_the_prompt():
    """Emu Video's two stages: a clip drawn from the condition gives its frame 0, and the clips are that
    frame continued, on the same generator; the callback sees the first stage's start and steps and then
    the second's steps, counted on."""
    task = _task(cond="none")
    with torch.no_grad():
        for p in task.model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    args = (task.model, task.schedule, "eps", (2, 4, 3, 32, 32))
    seen: list[int] = []
    g = torch.Generator().manual_seed(3)
    both = generate_clips(
        *args, steps=3, factorized=True, generator=g, callback=lambda i: seen.append(i["i"])
    )
    g = torch.Generator().manual_seed(3)
    drawn = generate_clips(*args, steps=3, generator=g)
    continued = generate_clips(*args, steps=3, generator=g, first_frame=drawn[:, 0])
    assert torch.equal(both, continued) and torch.equal(both[:, 0], drawn[:, 0])
    assert not torch.allclose(both[:, 1:], drawn[:, 1:]) and seen == list(range(-1, 6))


def test_the_same_seed_gives_the_same_clips_and_frames_are_not_copies():
    task = _task(cond="none")
    from genlab.nn.video_unet import VideoUNet as _V

    assert isinstance(task.model, _V)
    with torch.no_grad():
        for p in task.model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    shape = (1, 4, 3, 32, 32)
    a = generate_clips(
        task.model, task.schedule, "eps", shape, steps=3, generator=torch.Generator().manual_seed(3)
    )
    b = generate_clips(
        task.model, task.schedule, "eps", shape, steps=3, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(a, b) and not torch.equal(a[0, 0], a[0, 1])


def test_the_ablation_has_no_temporal_layers_and_denoises_frames_alone():
    task = _task(cond="none", temporal=False)
    net = task.model
    assert isinstance(net, VideoUNet) and not [n for n, _ in net.named_parameters() if "_time" in n]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(2)) * 0.1)
    x, t = torch.randn(1, 4, 3, 32, 32), torch.tensor([300.0])
    y = x.clone()
    y[:, 3] += 1.0
    assert torch.allclose(net(x, t)[:, :3], net(y, t)[:, :3])  # frame 3 reaches no other frame


def test_dit_backbone_refuses_per_frame_options():
    with pytest.raises(GenlabError, match="takes a first frame"):
        VideoDiffusionTask(
            DataConfig("moving-shapes"),
            DiffusionConfig(cond="none", backbone="dit"),
            VideoConfig(frame_cond=0.2),
            dit_options=dict(width=32, depth=1, heads=2, patch_size=4),
        )


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _fail(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    return result.output


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("video") / "run"
    result = _invoke("train", "video", *NET, "--frame-cond", "0.3", "--out", str(run), *SHORT)
    assert result.exit_code == 0, result.output
    return run


def test_train_video_writes_a_video_run_that_resumes(text_run):
    config = json.loads((text_run / "config.json").read_text())
    assert config["kind"] == "video" and config["video"]["frame_cond"] == 0.3
    assert config["model"]["video"]["unet"]["base_channels"] == 16
    result = _invoke("train", "video", "--out", str(text_run), "--resume", "--steps", "3", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "finished at step 3" in result.output


def test_sample_writes_a_gif_a_strip_and_a_trajectory(text_run, tmp_path):
    out, traj = tmp_path / "clip.gif", tmp_path / "traj.png"
    result = _invoke("sample", str(text_run), "a small red circle moving right", "--frames", "6", "--n", "2",
                     "--steps", "2", "--out", str(out), "--trajectory", str(traj))  # fmt: skip
    assert result.exit_code == 0, result.output
    gif = Image.open(out)
    assert gif.n_frames == 6
    strip = Image.open(out.with_suffix(".png"))
    assert strip.width > strip.height  # one row of 6 frames per clip
    assert traj.is_file() and "2 clips of 6 frames" in result.output
    first = tmp_path / "first.png"
    Image.new("RGB", (32, 32), (200, 20, 20)).save(first)
    result = _invoke("sample", str(text_run), "a small red circle moving right", "--n", "1", "--steps", "2",
                     "--first-frame", str(first), "--out", str(tmp_path / "i2v.png"))  # fmt: skip
    assert result.exit_code == 0, result.output


def test_video_pipeline_checks_its_inputs(text_run):
    from genlab.pipelines import VideoPipeline, load_pipeline

    pipe = load_pipeline(text_run)
    assert isinstance(pipe, VideoPipeline) and pipe.text
    out = pipe("a large blue square moving up", num_frames=4, num_clips=2, num_inference_steps=2)
    assert out.clips.shape == (2, 4, 3, 32, 32) and out.prompts == ["a large blue square moving up"] * 2
    assert len(out.frames[0]) == 4
    with pytest.raises(GenlabError, match="give a prompt"):
        pipe(num_inference_steps=2)
    with pytest.raises(GenlabError, match="num_frames"):
        pipe("a red circle moving up", num_frames=65, num_inference_steps=2)
    with pytest.raises(GenlabError, match="first frame must be"):
        pipe("a red circle moving up", first_frame=torch.rand(3, 16, 16), num_inference_steps=2)


def test_cli_errors_are_one_line(text_run, tmp_path):
    assert "give a prompt" in _fail("sample", str(text_run), "--steps", "2", "--out", str(tmp_path / "x.gif"))
    assert "video run" in _fail(
        "sample", str(text_run), "a red circle moving up", "--negative-prompt", "blue"
    )
    assert "without classes" in _fail("sample", str(text_run), "a red circle moving up", "--class", "3")
    assert "editing needs" in _fail("edit", "img2img", str(text_run), str(tmp_path / "none.png"))
    assert "moving-shapes" in _fail("train", "video", "--data", "mnist", "--out", str(tmp_path / "r"), *SHORT)


def test_a_class_run_without_frame_conditioning_refuses_a_first_frame(tmp_path):
    run = tmp_path / "class"
    result = _invoke(
        "train", "video", *NET, "--data", "moving-mnist", "--cond", "class", "--out", str(run), *SHORT
    )
    assert result.exit_code == 0, result.output
    from genlab.pipelines import load_pipeline

    pipe = load_pipeline(run)
    assert pipe.num_classes == 10 and pipe.class_names[7] == "7"
    out = pipe(class_labels=[7, 1], num_inference_steps=2, num_frames=3)
    assert out.clips.shape == (2, 3, 1, 48, 48) and out.class_labels.tolist() == [7, 1]
    with pytest.raises(GenlabError, match="frame_cond"):
        pipe(class_labels=[7], first_frame=torch.rand(1, 48, 48), num_inference_steps=2)
    with pytest.raises(GenlabError, match="frame_cond"):
        pipe(class_labels=[7], factorized=True, num_inference_steps=2)


def test_a_frame_stacking_run_trains_samples_its_own_length_and_refuses_per_frame_options(tmp_path):
    run = tmp_path / "stacked"
    stack = ["--stack-frames", "8", *NET[:6]]  # NET's U-Net, without its temporal levels
    result = _invoke(
        "train", "video", *stack, "--frame-cond", "0.5", "--factorized", "--out", str(run), *SHORT
    )
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    video = config["model"]["video"]
    assert video["stack_frames"] == 8 and video["first_frame_input"] is True and config["video"]["factorized"]
    out = tmp_path / "clip.gif"
    result = _invoke("sample", str(run), "a small red circle moving right", "--frames", "8", "--n", "1",
                     "--steps", "2", "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert Image.open(out).n_frames == 8
    first = tmp_path / "first.png"
    Image.new("RGB", (32, 32), (200, 20, 20)).save(first)
    result = _invoke("sample", str(run), "a small red circle moving right", "--n", "1", "--steps", "2",
                     "--first-frame", str(first), "--out", str(tmp_path / "i2v.png"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "exactly 8 frames; got 6" in _fail(
        "sample", str(run), "a small red circle moving right", "--frames", "6", "--steps", "2",
        "--out", str(tmp_path / "six.gif"),
    )  # fmt: skip
    assert "noise level per frame" in _fail(
        "train", "video", *stack, "--image-share", "0.3", "--out", str(tmp_path / "r"), *SHORT
    )
    result = _invoke("sample", str(run), "a small red circle moving right", "--n", "1", "--steps", "2",
                     "--one-stage", "--out", str(tmp_path / "one.png"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "set --frame-cond above 0" in _fail(
        "train", "video", *stack, "--factorized", "--out", str(tmp_path / "f"), *SHORT
    )


def test_a_run_with_a_full_size_level_per_frame_trains_and_samples(tmp_path):
    run = tmp_path / "frames"
    stack = ["--stack-frames", "8", "--frame-channels", "4", *NET[:6]]  # NET's U-Net, stacked at half size
    result = _invoke("train", "video", *stack, "--frame-cond", "0.5", "--out", str(run), *SHORT)
    assert result.exit_code == 0, result.output
    video = json.loads((run / "config.json").read_text())["model"]["video"]
    assert video["frame_channels"] == 4 and video["unet"]["image_size"] == 32
    result = _invoke("sample", str(run), "a small red circle moving right", "--n", "1", "--steps", "2",
                     "--factorized", "--out", str(tmp_path / "clip.gif"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "clip.gif").n_frames == 8
    assert "set --stack-frames too, or --frame-channels to 0" in _fail(
        "train", "video", "--frame-channels", "4", *NET, "--out", str(tmp_path / "f"), *SHORT
    )
    assert "--snr-floor 1.0 must lie in (0, --min-snr-gamma]" in _fail(
        "train", "video", "--min-snr-gamma", "0", "--snr-floor", "1", *NET, "--out", str(tmp_path / "s"),
        *SHORT,
    )  # fmt: skip


def test_an_edm_run_keeps_its_preconditioning_and_noise_levels_to_its_samples(tmp_path):
    run = tmp_path / "edm"
    stack = ["--stack-frames", "8", *NET[:6], "--parameterization", "edm", "--noise-levels", "lognormal"]
    result = _invoke("train", "video", *stack, "--p-mean", "-0.5", "--frame-cond", "0.5", "--out", str(run),
                     *SHORT)  # fmt: skip
    assert result.exit_code == 0, result.output
    diffusion = json.loads((run / "config.json").read_text())["diffusion"]
    chosen = [diffusion[k] for k in ("parameterization", "noise_levels", "p_mean")]
    assert chosen == ["edm", "lognormal", -0.5]
    out = tmp_path / "clip.gif"
    result = _invoke("sample", str(run), "a small red circle moving right", "--n", "1", "--steps", "2",
                     "--factorized", "--out", str(out))  # fmt: skip
    assert result.exit_code == 0 and Image.open(out).n_frames == 8, result.output
    assert "--p-std must be positive (got 0.0)" in _fail(
        "train", "video", *stack, "--p-std", "0", "--out", str(tmp_path / "bad"), *SHORT
    )


def test_a_mixed_noise_run_keeps_its_correlation_to_its_samples(tmp_path):
    run = tmp_path / "run"
    stack = ["--stack-frames", "8", *NET[:6]]
    result = _invoke("train", "video", *stack, "--noise-correlation", "0.5", "--out", str(run), *SHORT)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["video"]["noise_correlation"] == 0.5
    out = tmp_path / "clip.gif"
    result = _invoke("sample", str(run), "a small red circle moving right", "--steps", "2", "--out", str(out))
    assert result.exit_code == 0 and out.exists(), result.output
    assert "noise levels of their own" in _fail(
        "train", "video", "--noise-correlation", "0.5", "--frame-cond", "0.3", "--out", str(tmp_path / "bad"),
        *SHORT,
    )  # fmt: skip


def test_a_stacking_unet_reads_a_given_first_frame_as_an_input_plane():
    """Frame 0 at timestep 0 while the clip's others are not: a plane of ones beside the stacked frames, and
    the clip's noise level is its last frame's; otherwise a plane of zeros."""
    from genlab.nn.unet import UNetConfig
    from genlab.nn.video_unet import VideoUNetConfig

    torch.manual_seed(0)
    config = VideoUNetConfig(
        UNetConfig(in_channels=3, image_size=8, **TINY), stack_frames=4, first_frame_input=True
    )
    net = VideoUNet(config).eval()
    x = torch.randn(2, 4, 3, 8, 8)
    t = torch.tensor([[0.0, 500.0, 500.0, 500.0], [300.0] * 4])
    planes = torch.stack([torch.ones(8, 8), torch.zeros(8, 8)])[:, None]
    with torch.no_grad():
        expected = net.stacked(torch.cat([x.flatten(1, 2), planes], 1), torch.tensor([500.0, 300.0]))
        torch.testing.assert_close(net(x, t), expected.unflatten(1, (4, 3)))
        unseen = net.stacked(
            torch.cat([x.flatten(1, 2), torch.zeros(2, 1, 8, 8)], 1), torch.tensor([500.0, 300.0])
        )
        torch.testing.assert_close(net(x, torch.tensor([500.0, 300.0])), unseen.unflatten(1, (4, 3)))
    with pytest.raises(GenlabError, match="frame-stacking"):
        VideoUNetConfig(UNetConfig(in_channels=3, image_size=8, **TINY), first_frame_input=True)


@pytest.mark.parametrize("sampler", __import__("genlab.diffusion.samplers", fromlist=["SAMPLERS"]).SAMPLERS)
def test_every_sampler_draws_clips(sampler):
    task = _task(cond="none")
    clips = generate_clips(task.model, task.schedule, "eps", (1, 3, 3, 32, 32), steps=2, sampler=sampler)
    assert clips.shape == (1, 3, 3, 32, 32) and torch.isfinite(clips).all()


def test_the_video_bench_compares_per_clip_with_the_image_unet():
    from genlab.bench.video import VideoBenchSettings, format_video_table, run_video_bench
    from genlab.nn.unet import UNetConfig
    from genlab.nn.video_unet import VideoUNetConfig

    config = VideoUNetConfig(unet=UNetConfig(in_channels=3, image_size=8, **TINY, context_dim=8))
    result = run_video_bench(config, VideoBenchSettings(frames=4, clips=2, repeats=1, warmup=0, threads=1))
    video, image = result["results"]["video"], result["results"]["image"]
    assert video["parameters"] > image["parameters"] and video["gflops_per_clip"] > image["gflops_per_clip"]
    assert result["ratio_video_over_image"]["parameters"] == video["parameters"] / image["parameters"]
    assert "training step" in format_video_table(result)
    assert video["activation_mb_per_clip"] > image["activation_mb_per_clip"] > 0


def test_ddpm_on_clips_is_ho_et_al_algorithm_2_written_out():
    """genlab's DDPM sampler on a video network, all 1000 steps (8x8 frames: quick), against Algorithm 2 of
    Ho et al. (2020) step by step (x0 clamped to [-1, 1], the posterior of eq. 7), on the same noise."""
    from genlab.nn.unet import UNetConfig
    from genlab.nn.video_unet import VideoUNet, VideoUNetConfig

    torch.manual_seed(0)
    net = VideoUNet(
        VideoUNetConfig(UNetConfig(in_channels=3, image_size=8, **TINY), temporal_levels=(1,))
    ).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    shape, schedule = (1, 3, 3, 8, 8), DiffusionConfig().noise_schedule()
    clips = generate_clips(net, schedule, "eps", shape, steps=1000, sampler="ddpm",
                           generator=torch.Generator().manual_seed(1), clip_denoised=True)  # fmt: skip
    abar = schedule.abar(torch.arange(1000))
    alpha = torch.cat([abar[:1], abar[1:] / abar[:-1]])
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g)
    with torch.no_grad():
        for t in range(999, -1, -1):
            eps = net(x, torch.full((1,), float(t)))
            x0 = ((x - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()).clamp(-1, 1)
            if t == 0:
                break
            prev = abar[t - 1]
            mean = (
                prev.sqrt() * (1 - alpha[t]) / (1 - abar[t]) * x0
                + alpha[t].sqrt() * (1 - prev) / (1 - abar[t]) * x
            )
            x = mean + ((1 - prev) / (1 - abar[t]) * (1 - alpha[t])).sqrt() * torch.randn(
                x.shape, generator=g
            )
    torch.testing.assert_close(clips, (x0 + 1) / 2, atol=1e-4, rtol=0)


def test_opposite_direction_turns_every_direction_word_around():
    from genlab.video.evaluate import opposite_direction

    assert (
        opposite_direction("a small red circle moving up and left")
        == "a small red circle moving down and right"
    )
    assert opposite_direction("a blue square moving right slowly") == "a blue square moving left slowly"
    assert opposite_direction("a large cyan triangle") == "a large cyan triangle"


def test_the_probes_are_one_for_a_network_blind_to_what_they_change_and_not_otherwise():
    task = _task(video=VideoConfig(frame_cond=0.5))
    task.val_data = task.val_data.spread(24)  # a short evaluation
    net = task.model.eval()
    assert task.direction_probe(net, n=4) == 1.0  # a new network outputs zeros: the words change nothing
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the per-frame layers only: the temporal ones still output zero
        for name, p in net.named_parameters():
            if "_time." not in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    assert task.direction_probe(net, n=4) != 1.0  # its prompts now reach the output
    assert task.frame_probe(net, n=4) == 1.0  # but frames 1.. never see frame 0
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "_time." in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    assert task.frame_probe(net, n=4) != 1.0  # now they do
    assert {"direction_probe", "frame_probe"} <= set(task.evaluate(net))
    task.video = VideoConfig()  # a run never given first frames
    with pytest.raises(GenlabError, match="frame_cond"):
        task.frame_probe(net)
