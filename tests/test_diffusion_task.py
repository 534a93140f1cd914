"""The diffusion U-Net, its training task, the pipeline and the `genlab sample` / `diffusion` commands."""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from genlab.cli import cli
from genlab.data import DataConfig
from genlab.diffusion.task import DiffusionConfig, DiffusionTask
from genlab.errors import GenlabError
from genlab.nn.embeddings import sinusoidal_embedding
from genlab.nn.unet import UNet, UNetConfig, with_coordinates
from genlab.pipelines import DiffusionPipeline
from genlab.train import TrainConfig, Trainer, seed_step

TINY = dict(base_channels=16, channel_mults=(1, 2), attention_levels=(1,), head_dim=16)


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    """A class-conditional model on digits, trained for a few steps (enough to have weights, not quality)."""
    run = tmp_path_factory.mktemp("runs") / "digits"
    seed_step(0, -1)
    task = DiffusionTask(DataConfig("digits"), DiffusionConfig(cond="class", sample_steps=3), **TINY)
    cfg = TrainConfig(
        steps=6,
        batch_size=16,
        lr=1e-3,
        log_every=3,
        eval_every=3,
        sample_every=3,
        checkpoint_every=0,
        progress=False,
    )
    Trainer(task, cfg, run).train()
    return run


def test_sinusoidal_embedding_values():
    e = sinusoidal_embedding(torch.tensor([0.0, 1.0]), 4)
    assert torch.allclose(e[0], torch.tensor([1.0, 1.0, 0.0, 0.0]))
    # frequencies 1 and 10000^(-1/2) = 0.01
    assert torch.allclose(e[1], torch.tensor([math.cos(1), math.cos(0.01), math.sin(1), math.sin(0.01)]))


@pytest.mark.parametrize(
    ("size", "channels", "mults"), [(12, 3, (1, 2, 2)), (28, 1, (1, 2, 2)), (10, 1, (1, 2))]
)
def test_unet_keeps_shape_and_dtype_for_any_divisible_size(size, channels, mults):
    net = UNet(
        UNetConfig(
            in_channels=channels,
            image_size=size,
            base_channels=16,
            channel_mults=mults,
            attention_levels=(len(mults) - 1,),
            head_dim=16,
            num_classes=3,
        )
    )
    x = torch.randn(2, channels, size, size)
    for labels in (None, torch.tensor([0, 2])):
        out = net(x, torch.tensor([3.0, 999.0]), labels)
        assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.count_nonzero(out) == 0  # zero-initialised output layer: a new U-Net predicts 0


def test_coordinate_channels_are_each_pixels_column_and_row():
    grid = with_coordinates(torch.zeros(2, 1, 3, 5))
    assert grid.shape == (2, 3, 3, 5) and torch.count_nonzero(grid[:, 0]) == 0
    assert torch.equal(grid[1, 1, 2], torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))  # x runs right
    assert torch.equal(grid[0, 2, :, 4], torch.tensor([-1.0, 0.0, 1.0]))  # y runs down
    net = UNet(UNetConfig(image_size=8, coordinates=True, **TINY))
    assert net.conv_in.in_channels == 3
    assert net(torch.randn(2, 1, 8, 8), torch.tensor([1.0, 2.0])).shape == (2, 1, 8, 8)


def test_unet_learns_something_in_a_few_steps():
    torch.manual_seed(0)
    net = UNet(UNetConfig(image_size=8, **TINY))
    x, t = torch.randn(8, 1, 8, 8), torch.full((8,), 10.0)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    first = None
    for _ in range(20):
        loss = (net(x, t) - x).pow(2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first  # gradients reach every part, including the zero-initialised ones


def test_size_not_divisible_by_the_downsampling_is_a_clear_error():
    with pytest.raises(GenlabError, match="not divisible"):
        UNet(UNetConfig(image_size=10, channel_mults=(1, 2, 2)))


def test_bad_diffusion_settings_are_clear():
    with pytest.raises(GenlabError, match="unknown schedule"):
        DiffusionConfig(schedule="quadratic")
    with pytest.raises(GenlabError, match="parameterization"):
        DiffusionConfig(parameterization="score")
    with pytest.raises(GenlabError, match=r"^`cond_dropout` must be in \[0, 1\) \(got 1.5\)$"):
        DiffusionConfig(cond_dropout=1.5)
    with pytest.raises(GenlabError, match="`min_snr_gamma`"):
        DiffusionConfig(min_snr_gamma=-1.0)


@pytest.mark.parametrize(
    "args, said",
    [
        (["--cond-dropout", "1.5"], "--cond-dropout must be in [0, 1) (got 1.5)"),
        (["--min-snr-gamma", "-1"], "--min-snr-gamma must be 0 (off) or positive (got -1.0)"),
        (["--p-std", "0"], "--p-std must be positive (got 0.0)"),
        (["--timesteps", "0"], "--timesteps must be between 1 and 100000 (got 0)"),
        (["--sample-steps", "0"], "--sample-steps must be between 1 and 100000 (got 0)"),
        (["--upscale", "2", "--backbone", "dit"],
         "an --upscale model is a pixel-space U-Net: drop --latent and --backbone dit"),
        (["--upscale", "4", "--image-size", "6"], "--upscale 4 needs an image side divisible by it (got 6)"),
        (["--cond", "text", "--data", "shapes", "--text-encoder", "bogus"], "--text-encoder 'bogus': use "
         "'joint' or 'clip:RUN' (a genlab CLIP run), or 'minilm'"),
    ],
)  # fmt: skip
def test_train_diffusion_names_its_options(tmp_path, args, said):
    """The settings name their parameters (`cond_dropout`); `genlab train diffusion` its options."""
    result = CliRunner().invoke(
        cli,
        ["train", "diffusion", "--data", "digits", "--features", "none", *args, "--out", str(tmp_path / "r")],
    )
    assert result.exit_code == 2 and result.output == f"error: {said}\n", result.output


def test_training_writes_a_loadable_run_with_grids(class_run):
    assert list((class_run / "samples").glob("step_*.png"))
    pipe = DiffusionPipeline.from_pretrained(class_run)
    assert pipe.num_classes == 10 and pipe.class_names[7] == "7"
    assert pipe.class_index("7") == 7


def test_pipeline_outputs_and_seeds(class_run):
    pipe = DiffusionPipeline.from_pretrained(class_run)
    a = pipe(3, class_labels=5, num_inference_steps=4, generator=torch.Generator().manual_seed(1))
    b = pipe(3, class_labels=5, num_inference_steps=4, generator=torch.Generator().manual_seed(1))
    c = pipe(3, class_labels=5, num_inference_steps=4, generator=torch.Generator().manual_seed(2))
    assert len(a.images) == 3 and isinstance(a.images[0], Image.Image) and a.images[0].size == (8, 8)
    assert a.tensors.shape == (3, 1, 8, 8) and 0 <= a.tensors.min() and a.tensors.max() <= 1
    assert torch.equal(a.tensors, b.tensors) and not torch.equal(a.tensors, c.tensors)
    assert a.class_labels.tolist() == [5, 5, 5]
    traj = pipe(2, num_inference_steps=5, sampler="euler", return_trajectory=True).trajectory
    assert len(traj) == 6 and torch.equal(traj[-1], traj[-1].clamp(0, 1))


def test_guidance_scale_one_is_plain_conditional_sampling(class_run):
    """At scale 1 the guided denoiser must equal the conditional one: same images as without CFG wrapper."""
    from genlab.diffusion.denoiser import VPDenoiser
    from genlab.diffusion.samplers import sample

    pipe = DiffusionPipeline.from_pretrained(class_run, precision="fp32")  # as the denoiser below
    labels = torch.tensor([1, 4])
    g = torch.Generator().manual_seed(3)
    guided = pipe(2, labels, num_inference_steps=4, guidance_scale=1.0, generator=g, clip_denoised=False)
    noise = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    denoiser = VPDenoiser(pipe.unet, pipe.schedule, "eps")
    with torch.no_grad():
        x = sample("dpmpp-2m", denoiser, noise, pipe.schedule, 4, extra_args={"class_labels": labels})
    assert torch.allclose(guided.tensors, ((x + 1) / 2).clamp(0, 1), atol=1e-6)


def test_clipped_sampling_sees_only_estimates_in_the_data_range(class_run):
    """clip_denoised (as in Ho et al.'s sampler) clamps every x0 estimate the solver uses to [-1, 1]."""
    from genlab.diffusion.generate import generate

    pipe = DiffusionPipeline.from_pretrained(class_run)
    seen: dict[bool, list[float]] = {True: [], False: []}
    for clip in (True, False):
        generate(
            pipe.unet,
            pipe.schedule,
            "eps",
            (4, 1, 8, 8),
            class_labels=torch.tensor([3, 3, 5, 5]),
            steps=5,
            sampler="euler",
            guidance_scale=6.0,
            generator=torch.Generator().manual_seed(0),
            clip_denoised=clip,
            callback=lambda info, c=clip: (
                info["i"] >= 0 and seen[c].append(float(info["denoised"].abs().max()))
            ),
        )
    assert len(seen[True]) == 5 and max(seen[True]) <= 1.0
    assert max(seen[False]) > 1.0  # a few steps of a barely trained model at guidance 6 overshoot


def test_bad_sampling_arguments_are_clear(class_run):
    pipe = DiffusionPipeline.from_pretrained(class_run)
    with pytest.raises(GenlabError, match="at least 1"):
        pipe(2, 3, num_inference_steps=0)
    with pytest.raises(GenlabError, match="unknown sampler"):
        pipe(2, 3, sampler="plms")
    with pytest.raises(GenlabError, match="out of range"):
        pipe(2, 10)
    with pytest.raises(GenlabError, match="unknown class"):
        pipe.class_index("seven")


def test_sample_command(class_run, tmp_path):
    runner = CliRunner()
    out, traj = tmp_path / "grid.png", tmp_path / "traj.gif"
    args = ["sample", str(class_run), "--class", "all", "--n", "10", "--steps", "3", "--out", str(out)]
    result = runner.invoke(cli, [*args, "--trajectory", str(traj)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and Image.open(traj).n_frames >= 3  # noise + 3 steps (Pillow merges equal frames)
    strip = tmp_path / "traj.png"
    result = runner.invoke(
        cli,
        [
            "sample",
            str(class_run),
            "--class",
            "3",
            "--n",
            "2",
            "--steps",
            "4",
            "--sampler",
            "ddim",
            "--eta",
            "0.5",
            "--trajectory",
            str(strip),
            "--out",
            str(tmp_path / "b.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert strip.is_file()
    result = runner.invoke(cli, ["sample", str(class_run), "--class", "12"])
    assert result.exit_code == 2 and "out of range" in result.output
    result = runner.invoke(cli, ["sample", str(class_run), "--sampler", "euler", "--eta", "1"])
    assert result.exit_code == 2 and "--eta" in result.output


def test_wrong_kind_of_run_is_refused(tmp_path):
    from genlab.nn import Classifier, ClassifierConfig

    Classifier(ClassifierConfig(widths=(4,), hidden=8)).save_pretrained(tmp_path)
    with pytest.raises(GenlabError, match="not a 'diffusion' run"):
        DiffusionPipeline.from_pretrained(tmp_path)


def test_noise_command_draws_the_forward_process(tmp_path):
    out = tmp_path / "strip.png"
    result = CliRunner().invoke(
        cli, ["diffusion", "noise", "--data", "digits", "--frames", "5", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert Image.open(out).size[0] > 5 * 8


def test_noising_strip_is_the_closed_form():
    from genlab.diffusion.pictures import noising_strip
    from genlab.diffusion.schedules import NoiseSchedule

    image = torch.rand(1, 4, 4)
    schedule = NoiseSchedule()
    strip, captions = noising_strip(image, schedule, frames=3, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(0))
    for frame, t in zip(strip, (0, 500, 999), strict=True):  # linspace(0, 999, 3) rounded
        abar = schedule.alphas_cumprod[t].item()
        expected = ((math.sqrt(abar) * (2 * image - 1) + math.sqrt(1 - abar) * noise + 1) / 2).clamp(0, 1)
        assert torch.allclose(frame, expected, atol=1e-5)
    assert captions[0].startswith("t=0 ") and captions[2].startswith("t=999 ")


def test_cli_sampler_names_are_the_samplers():
    from genlab.cli.common import SAMPLER_NAMES
    from genlab.diffusion import SAMPLERS

    assert tuple(SAMPLERS) == SAMPLER_NAMES


# ------------------------------------------------------------------ EDM and sample quality in training


def test_lognormal_noise_levels_follow_karras_et_al():
    """ln sigma ~ N(-1.2, 1.2^2) (Karras et al. 2022, Table 1), clamped to the schedule's range, with the
    timestep of each sigma and abar = 1 / (1 + sigma^2); uniform timesteps otherwise."""
    from genlab.diffusion.task import draw_noise_levels

    edm = DiffusionConfig(parameterization="edm")
    assert edm.lognormal and not DiffusionConfig().lognormal
    assert DiffusionConfig(noise_levels="lognormal").lognormal
    schedule = edm.noise_schedule()
    t, abar = draw_noise_levels(edm, schedule, 20000, torch.Generator().manual_seed(0))
    sigma = ((1 - abar.double()) / abar.double()).sqrt()
    assert abs(float(sigma.log().mean()) + 1.2) < 0.05 and abs(float(sigma.log().std()) - 1.2) < 0.05
    assert float(sigma.min()) >= schedule.sigma_min * (1 - 1e-6)
    # abar is float32: 1 - abar keeps about 4 digits at the smallest sigmas
    assert torch.allclose(schedule.t_to_sigma(t.double()), sigma, rtol=2e-3)
    t, abar = draw_noise_levels(DiffusionConfig(), schedule, 1000, torch.Generator().manual_seed(0))
    assert torch.equal(t, t.round()) and torch.equal(abar, schedule.abar(t.long()))
    with pytest.raises(GenlabError, match="`noise_levels`"):
        DiffusionConfig(noise_levels="cosine")


def test_edm_run_trains_and_samples(tmp_path):
    seed_step(0, -1)
    task = DiffusionTask(DataConfig("digits"), DiffusionConfig(cond="class", parameterization="edm"), **TINY)
    cfg = TrainConfig(
        steps=30, batch_size=16, eval_every=0, sample_every=0, checkpoint_every=0, progress=False
    )
    with torch.no_grad():
        first = task.evaluate(task.model)["val_loss"]
    Trainer(task, cfg, tmp_path / "edm").train()
    with torch.no_grad():
        assert task.evaluate(task.model)["val_loss"] < 0.8 * first
    out = DiffusionPipeline.from_pretrained(tmp_path / "edm")(4, 3, 4, 2.0, "heun")
    assert out.tensors.shape == (4, 1, 8, 8) and torch.isfinite(out.tensors).all()


@pytest.fixture(scope="module")
def digits_judge(tmp_path_factory):
    run = tmp_path_factory.mktemp("judge") / "clf"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "classifier",
            "--data",
            "digits",
            "--steps",
            "40",
            "--eval-every",
            "0",
            "--sample-every",
            "0",
            "--no-progress",
            "--out",
            str(run),
        ],  # fmt: skip
    )
    assert result.exit_code == 0, result.output
    return run


def test_every_evaluation_scores_fixed_seed_samples(tmp_path, digits_judge):
    """A class run's evaluations draw the same seeds and report FID and the share the judge recognises as
    asked; the share is that of the judge's own predictions on those samples."""
    from genlab.classification.evaluate import predict
    from genlab.evaluation.monitor import MonitorConfig
    from genlab.nn import Classifier

    seed_step(0, -1)
    monitor = MonitorConfig(samples=20, features=str(digits_judge))
    task = DiffusionTask(
        DataConfig("digits"), DiffusionConfig(cond="class", sample_steps=3), monitor=monitor, **TINY
    )
    cfg = TrainConfig(steps=4, batch_size=8, eval_every=2, sample_every=0, checkpoint_every=0, progress=False)
    Trainer(task, cfg, tmp_path / "r").train()
    from genlab import rundir

    evals = [r for r in rundir.read_metrics(tmp_path / "r") if r["event"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4]
    for key in ("fid", "precision", "recall", "recognised", "class_histogram", "modes_covered"):
        assert key in evals[-1], key
    assert sum(evals[-1]["class_histogram"]) == 20
    labels = torch.arange(10).repeat_interleave(2)
    images = task.draw(task.model.eval(), torch.Generator().manual_seed(0), labels=labels)
    judge = Classifier.from_pretrained(digits_judge)
    share = float((predict(judge, images).argmax(1) == labels).float().mean())
    assert evals[-1]["recognised"] == pytest.approx(share)
    assert rundir.read_config(tmp_path / "r")["monitor"] == {
        "samples": 20,
        "features": str(digits_judge),
        "paraphrases": False,
    }


def test_text_runs_on_shapes_score_prompt_adherence(tmp_path):
    from genlab.evaluation.monitor import MonitorConfig
    from genlab.metrics.adherence import prompt_adherence, single_object_prompts

    seed_step(0, -1)
    task = DiffusionTask(
        DataConfig("shapes"),
        DiffusionConfig(cond="text", sample_steps=2),
        text_options=dict(width=32, layers=1, heads=2),
        monitor=MonitorConfig(samples=6, features="none"),
        **TINY,
    )
    scores = task.sample_quality(task.model.eval())
    prompts = single_object_prompts(task.val_data.captions)[:6]
    images = task.draw(task.model, torch.Generator().manual_seed(0), prompts=prompts)
    assert scores["adherence"] == prompt_adherence(images, prompts)["all"]
    assert set(scores) == {"adherence", *(f"adherence_{k}" for k in
                                          ("shape", "color", "size", "position", "count"))}  # fmt: skip


def test_train_command_draws_the_diagnostics(tmp_path, digits_judge):
    run = tmp_path / "run"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "diffusion",
            "--data",
            "digits",
            "--cond",
            "class",
            "--base-channels",
            "16",
            "--channel-mults",
            "1,2",
            "--attention-levels",
            "1",
            "--steps",
            "2",
            "--sample-every",
            "0",
            "--eval-samples",
            "10",
            "--features",
            str(digits_judge),
            "--sample-steps",
            "2",
            "--parameterization",
            "edm",
            "--no-progress",
            "--out",
            str(run),
        ],  # fmt: skip
    )
    assert result.exit_code == 0, result.output
    assert "share of samples recognised as the class asked for" in result.output
    assert (run / "diagnostics.png").is_file()
    replot = CliRunner().invoke(cli, ["diffusion", "plot", str(run), "--out", str(tmp_path / "d.png")])
    assert replot.exit_code == 0 and (tmp_path / "d.png").is_file(), replot.output
    bad = CliRunner().invoke(cli, ["train", "diffusion", "--data", "digits", "--eval-samples", "-1",
                                   "--out", str(tmp_path / "bad")])  # fmt: skip
    assert bad.exit_code == 2 and "--eval-samples" in bad.output


def test_sampling_precision_bf16_stays_close_to_fp32(class_run):
    """bf16 autocast of the network only: the samples come back float32 and near the float32 ones; a
    wrong precision is a one-line error."""
    exact = DiffusionPipeline.from_pretrained(class_run, precision="fp32")
    fast = DiffusionPipeline.from_pretrained(class_run, precision="bf16")
    a = exact(4, 3, 4, 2.0, generator=torch.Generator().manual_seed(0)).tensors
    b = fast(4, 3, 4, 2.0, generator=torch.Generator().manual_seed(0)).tensors
    assert b.dtype == torch.float32 and not torch.equal(a, b)
    assert (a - b).abs().mean() < 0.02
    with pytest.raises(GenlabError, match="`precision`"):
        DiffusionPipeline.from_pretrained(class_run, precision="fp16")
    args = ["sample", str(class_run), "--class", "1", "--n", "2", "--steps", "2", "--precision", "fp32"]
    out = CliRunner().invoke(cli, [*args, "--out", str(class_run.parent / "p.png")])
    assert out.exit_code == 0, out.output


def test_attention_under_autocast_is_the_float32_attention():
    """On the CPU the attention products run in float32 also under bf16 autocast (torch's bf16 CPU kernel
    is slower), so only the projections around them see bfloat16 rounding."""
    from genlab.nn.attention import SelfAttention2d, attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 16, 8) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.float32
    reference = torch.softmax(q.bfloat16().float() @ k.bfloat16().float().transpose(-1, -2) / 8**0.5, -1)
    assert torch.allclose(out, reference @ v.bfloat16().float(), atol=1e-5)
    block = SelfAttention2d(16, 8, 4)
    torch.nn.init.normal_(block.proj.weight)
    x = torch.randn(2, 16, 4, 4)
    n, c, h, w = x.shape  # the same block written with 1x1 convolutions, as before the token layout
    qkv = block.qkv(block.norm(x)).reshape(n, 3, 2, 8, h * w)
    q2, k2, v2 = (qkv[:, i].transpose(-1, -2) for i in range(3))
    conv_out = torch.nn.functional.scaled_dot_product_attention(q2, k2, v2)
    expected = x + block.proj(conv_out.transpose(-1, -2).reshape(n, c, h, w))
    assert torch.allclose(block(x), expected, atol=1e-5)
