"""GANs: the losses against their formulas, the saturating gradient, the per-sample gradient penalty, the
theory's -log 4, toy mode coverage, the models, the training step on the engine and the commands."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from genlab import rundir
from genlab.cli import cli
from genlab.data import DataConfig
from genlab.data.kmeans import kmeans
from genlab.errors import GenlabError
from genlab.gan.diffaugment import cutout, diff_augment, parse_policy, translation
from genlab.gan.game import discriminator_terms
from genlab.gan.latent import arithmetic, interpolate, slerp
from genlab.gan.losses import (
    LOSSES,
    critic_wasserstein,
    discriminator_bce,
    discriminator_hinge,
    generator_minimax,
    generator_non_saturating,
    generator_wasserstein,
    gradient_penalty,
    mode_seeking_term,
    r1_penalty,
)
from genlab.gan.models import GAN, GANConfig, clusters_of, dcgan_levels, minibatch_std, pack
from genlab.gan.task import GameConfig, GANTask, MonitorConfig
from genlab.gan.toy import ToyConfig, modes_covered, render_frame, theory_check, toy_data, train_toy
from genlab.nn.classifier import ClassifierConfig
from genlab.pipelines.gan import GANPipeline
from genlab.train import TrainConfig, Trainer, seed_step
from genlab.train.engine import Batch

REAL = torch.tensor([0.0, 2.0, -1.0])
FAKE = torch.tensor([-1.0, 1.0, 3.0])


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_losses_equal_their_formulas_on_hand_computed_logits():
    d_real, d_fake = [_sig(v) for v in REAL.tolist()], [_sig(v) for v in FAKE.tolist()]
    bce = -(sum(math.log(d) for d in d_real) / 3 + sum(math.log(1 - d) for d in d_fake) / 3)
    assert discriminator_bce(REAL, FAKE).item() == pytest.approx(bce, rel=1e-6)
    assert generator_minimax(FAKE).item() == pytest.approx(sum(math.log(1 - d) for d in d_fake) / 3, rel=1e-6)
    assert generator_non_saturating(FAKE).item() == pytest.approx(
        -sum(math.log(d) for d in d_fake) / 3, rel=1e-6
    )
    # WGAN: E D(fake) - E D(real) = 1 - 1/3; hinge: mean relu(1 - r) + mean relu(1 + f)
    assert critic_wasserstein(REAL, FAKE).item() == pytest.approx(1.0 - 1.0 / 3.0)
    assert generator_wasserstein(FAKE).item() == pytest.approx(-1.0)
    hinge = (1.0 + 0.0 + 2.0) / 3 + (0.0 + 2.0 + 4.0) / 3
    assert discriminator_hinge(REAL, FAKE).item() == pytest.approx(hinge)
    # BCE at the equilibrium D = 1/2 everywhere is log 4: V = -log 4 (Goodfellow et al., theorem 1)
    zeros = torch.zeros(5)
    assert discriminator_bce(zeros, zeros).item() == pytest.approx(math.log(4))


def test_the_saturating_generator_loss_loses_its_gradient_as_d_rejects_the_fakes():
    """d/dl log(1 - sigmoid(l)) = -D(G(z)) -> 0, while d/dl -log sigmoid(l) = -(1 - D(G(z))) -> -1."""
    grads = {}
    for name, loss in (("minimax", generator_minimax), ("ns", generator_non_saturating)):
        logits = torch.tensor([-2.0, -6.0, -12.0], requires_grad=True)  # D(G(z)) = 0.12, 2.5e-3, 6e-6
        loss(logits).backward()
        grads[name] = logits.grad * 3  # per sample (undo the mean)
    d = torch.sigmoid(torch.tensor([-2.0, -6.0, -12.0]))
    assert torch.allclose(grads["minimax"], -d, atol=1e-7)
    assert torch.allclose(grads["ns"], -(1 - d), atol=1e-7)
    assert grads["minimax"].abs()[-1] < 1e-5 and grads["ns"].abs()[-1] > 0.999
    assert (grads["minimax"].abs().diff() < 0).all()  # shrinks as D(G(z)) -> 0


def test_gradient_penalty_of_a_linear_critic_is_known():
    w = torch.tensor([3.0, 4.0])  # ||w|| = 5 everywhere: (5 - 1)^2 = 16 per sample
    real, fake = torch.randn(6, 2), torch.randn(6, 2)
    gp = gradient_penalty(lambda x: x @ w, real, fake)
    assert gp.shape == (6,) and torch.allclose(gp, torch.full((6,), 16.0))


def test_gradient_penalty_is_per_sample_on_images():
    seed_step(0, -1)
    critic = GAN(GANConfig(image_size=16, d_norm="layer")).discriminator
    real, fake = torch.rand(4, 1, 16, 16) * 2 - 1, torch.rand(4, 1, 16, 16) * 2 - 1
    gp = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(3))
    changed = real.clone()
    changed[2] = -changed[2]
    gp2 = gradient_penalty(critic, changed, fake, torch.Generator().manual_seed(3))
    assert gp.shape == (4,)
    assert not torch.isclose(gp[2], gp2[2])
    assert torch.allclose(gp[[0, 1, 3]], gp2[[0, 1, 3]], atol=1e-6)
    gp.mean().backward()  # create_graph: the penalty trains the critic
    weights = [p for name, p in critic.named_parameters() if name.endswith("weight")]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)  # biases do not move grad_x


def test_r1_penalty_is_the_squared_gradient_norm_on_real_data_per_sample():
    w = torch.tensor([3.0, 4.0])  # grad_x (w . x) = w: ||w||^2 = 25 per sample
    assert torch.allclose(r1_penalty(lambda x: x @ w, torch.randn(5, 2)), torch.full((5,), 25.0))
    quadratic = r1_penalty(lambda x: (x**2).sum(1), torch.tensor([[1.0, 2.0], [0.0, 0.0]]))
    assert torch.allclose(quadratic, torch.tensor([20.0, 0.0]))  # grad = 2x: 4 * (1 + 4), and 0
    seed_step(0, -1)
    critic = GAN(GANConfig(image_size=16, d_norm="none")).discriminator
    real = torch.rand(4, 1, 16, 16) * 2 - 1
    changed = real.clone()
    changed[1] = -changed[1]
    r1, r1b = r1_penalty(critic, real), r1_penalty(critic, changed)
    assert not torch.isclose(r1[1], r1b[1]) and torch.allclose(r1[[0, 2, 3]], r1b[[0, 2, 3]], atol=1e-6)
    # In D's loss it is gamma / 2 of the mean, on the real batch only (Mescheder et al. 2018, eq. 9)
    rule, fake = LOSSES["ns"], torch.rand(4, 1, 16, 16) * 2 - 1
    plain = discriminator_terms(critic, real, fake, rule)
    with_r1 = discriminator_terms(critic, real, fake, rule, r1_gamma=10.0)
    assert plain.r1 is None and with_r1.r1.item() == pytest.approx(r1.mean().item(), rel=1e-5)
    assert with_r1.loss.item() == pytest.approx(plain.loss.item() + 5.0 * r1.mean().item(), rel=1e-5)


def test_value_at_the_optimal_discriminator_is_minus_log_4_at_equilibrium():
    rows = theory_check()
    assert rows[0]["shift"] == 0.0 and rows[0]["value"] == pytest.approx(-math.log(4), abs=1e-9)
    for row in rows[1:]:
        assert row["value"] > -math.log(4) + 1e-3  # the generator is not the data: V(D*, G) is above
        assert row["value"] == pytest.approx(row["minus_log4_plus_2jsd"], abs=1e-9)
    # A shift of 3 lays one cluster exactly on the other: half the mass matches, JSD = log(2) / 2
    assert rows[-1]["jsd"] == pytest.approx(math.log(2) / 2, abs=1e-6)


def test_mode_coverage_on_the_ring():
    ring = toy_data("ring")
    assert modes_covered(ring.sample(2000, torch.Generator().manual_seed(0)), ring)["modes_covered"] == 8
    one = ring.centers[3] + 0.01 * torch.randn(500, 2)
    assert modes_covered(one, ring)["modes_covered"] == 1
    assert modes_covered(torch.zeros(100, 2), ring) == {
        "modes_covered": 0,
        "num_modes": 8,
        "high_quality": 0.0,
        "histogram": [0] * 8,
    }
    with pytest.raises(GenlabError, match="unknown toy data"):
        toy_data("cats")


def test_toy_training_records_frames_and_draws_them():
    result = train_toy(ToyConfig(data="ducks-cows", steps=40, frames=4, batch_size=64))
    assert [r["step"] for r in result.history] == [0, 10, 20, 30, 40]
    assert "d_loss" in result.history[-1] and len(result.critics) == 5
    frame = render_frame(result, 4)
    assert frame.shape[0] == 3 and 0 <= frame.min() and frame.max() <= 1
    wgan = train_toy(ToyConfig(data="ring", loss="wgan-gp", steps=5, frames=1, batch_size=32))
    assert len(wgan.history) == 2 and wgan.snapshots[-1].shape == (2000, 2)


@pytest.mark.parametrize(
    "size,expected", [(28, (2, 7)), (32, (3, 4)), (64, (4, 4)), (8, (1, 4)), (30, (1, 15))]
)
def test_dcgan_geometry(size, expected):
    assert dcgan_levels(size) == expected
    gan = GAN(GANConfig(image_size=size, in_channels=3))
    x = gan.generate(gan.latents(2))
    assert x.shape == (2, 3, size, size) and 0 <= x.min() and x.max() <= 1
    assert gan.discriminate(x).shape == (2,)


def test_models_refuse_what_they_cannot_do():
    with pytest.raises(GenlabError, match="even image side"):
        GANConfig(image_size=7)
    with pytest.raises(GenlabError, match="unknown GAN `arch`"):
        GANConfig(arch="stylegan")
    with pytest.raises(GenlabError, match="class labels"):
        GANConfig(arch="cgan", num_classes=0)
    cgan = GAN(GANConfig(arch="cgan", num_classes=10, image_size=8))
    with pytest.raises(GenlabError, match="class-conditional"):
        cgan.generate(cgan.latents(2))
    assert cgan.generate(cgan.latents(2), torch.tensor([1, 2])).shape == (2, 1, 8, 8)


def test_slerp_and_arithmetic():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    path = interpolate(a, b, 5)
    assert torch.allclose(path[0], a) and torch.allclose(path[-1], b)
    assert torch.allclose(path.norm(dim=-1), torch.ones(5, 1))  # the arc keeps the norm
    assert torch.allclose(interpolate(a, b, 3, "lerp")[1], torch.tensor([[0.5, 0.5]]))
    assert torch.allclose(slerp(a, a, torch.tensor([0.5])), a)  # parallel: the line
    x, y, z = torch.ones(3, 4), torch.zeros(2, 4), 2 * torch.ones(1, 4)
    assert torch.equal(arithmetic(x, y, z), torch.full((4,), 3.0))
    with pytest.raises(GenlabError):
        interpolate(a, b, 1)


def _tiny_task(loss: str = "ns", arch: str = "dcgan", d_steps: int = 0, augment: str = "") -> GANTask:
    seed_step(0, -1)
    return GANTask(
        DataConfig("digits"),
        GameConfig(loss, d_steps, augment=augment),
        monitor=MonitorConfig(features="none"),
        arch=arch,
        width=8,
        z_dim=8,
    )


def test_k_discriminator_steps_per_generator_step(tmp_path):
    task = _tiny_task("wgan-gp")  # 5 critic steps per generator step (Gulrajani et al.)
    cfg = TrainConfig(
        steps=2, batch_size=16, eval_every=0, sample_every=0, checkpoint_every=0, progress=False
    )
    trainer = Trainer(task, cfg, tmp_path / "run")
    trainer.train()
    opt_g, opt_d = trainer.optimizers["generator"], trainer.optimizers["discriminator"]
    step_of = lambda opt: int(next(iter(opt.state.values()))["step"])  # noqa: E731
    assert step_of(opt_g) == 2 and step_of(opt_d) == 10
    assert opt_d.param_groups[0]["betas"] == (0.0, 0.9)
    assert task.model.config.d_norm == "layer"
    record = [r for r in rundir.read_metrics(tmp_path / "run") if r["event"] == "train"][-1]
    for key in ("d_loss", "g_loss", "d_real", "d_fake", "gradient_penalty"):
        assert key in record


def test_resume_continues_a_gan_exactly(tmp_path):
    def cfg(steps):
        return TrainConfig(
            steps=steps,
            batch_size=16,
            warmup_steps=0,
            min_lr_ratio=1.0,  # a constant rate: the two runs' horizons differ
            eval_every=0,
            sample_every=0,
            checkpoint_every=0,
            progress=False,
        )

    task = lambda: _tiny_task(d_steps=2, augment="translation,cutout")  # noqa: E731
    Trainer(task(), cfg(6), tmp_path / "full").train()
    Trainer(task(), cfg(3), tmp_path / "split").train()
    config = rundir.read_config(tmp_path / "split")
    Trainer(GANTask.from_run_config(config), cfg(6), tmp_path / "split", resume=True).train()
    (wa, _), (wb, _) = rundir.load_checkpoint(tmp_path / "full"), rundir.load_checkpoint(tmp_path / "split")
    for name in ("model", "ema", "optimizer_generator", "optimizer_discriminator"):
        for key in wa[name]:
            assert torch.equal(wa[name][key], wb[name][key]), f"{name}.{key}"


def test_wgan_gp_refuses_a_batchnorm_critic():
    with pytest.raises(GenlabError, match="per sample"):
        GANTask(
            DataConfig("digits"),
            GameConfig("wgan-gp"),
            monitor=MonitorConfig(features="none"),
            d_norm="batch",
        )


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


FAST = ["--data", "digits", "--width", "8", "--z-dim", "8", "--batch-size", "16", "--no-progress"]


def test_train_sample_eval_interpolate_arithmetic(tmp_path):
    run = tmp_path / "cgan"
    result = invoke(
        "train", "gan", *FAST, "--arch", "cgan", "--loss", "hinge", "--steps", "4", "--out", str(run)
    )
    assert result.exit_code == 0, result.output
    config = rundir.read_config(run, kind="gan")
    assert config["game"]["loss"] == "hinge" and config["model"]["num_classes"] == 10
    evals = [r for r in rundir.read_metrics(run) if r["event"] == "eval"]
    assert "fid" in evals[-1] and len(evals[-1]["class_histogram"]) == 10  # the monitor ran (auto features)
    assert 0 <= evals[-1]["precision"] <= 1 and 0 <= evals[-1]["recall"] <= 1

    pipe = GANPipeline.from_pretrained(run)
    out = pipe(5, [3], generator=torch.Generator().manual_seed(0))
    assert out.tensors.shape == (5, 1, 8, 8) and out.class_labels.tolist() == [3] * 5
    with pytest.raises(GenlabError, match="class labels must lie"):
        pipe(2, [10])

    grid = tmp_path / "grid.png"
    assert invoke("sample", str(run), "--class", "all", "--n", "20", "--out", str(grid)).exit_code == 0
    assert grid.is_file()
    walk = tmp_path / "walk.png"
    assert (
        invoke("gan", "interpolate", str(run), "--rows", "2", "--steps", "4", "--out", str(walk)).exit_code
        == 0
    )
    assert walk.is_file()
    sums = tmp_path / "sums.png"
    r = invoke("gan", "arithmetic", str(run), "--a", "1,2", "--b", "3", "--c", "4", "--out", str(sums))
    assert r.exit_code == 0, r.output
    assert sums.is_file()
    bad = CliRunner().invoke(
        cli, ["gan", "arithmetic", str(run), "--by", "class", "--a", "7", "--b", "1", "--c", "4"]
    )
    assert bad.exit_code == 2 and "use --by index" in bad.output

    report = tmp_path / "eval.json"
    r = invoke("eval", str(run), "--n", "50", "--metrics", "accuracy,fid,coverage", "--out", str(report))
    assert r.exit_code == 0, r.output
    data = json.loads(report.read_text())
    assert 0 <= data["accuracy"]["value"] <= 1 and data["fid"]["value"] > 0 and data["nfe"] == 1


def test_restarts_keep_the_run_of_best_fid(tmp_path):
    out = tmp_path / "best"
    result = invoke("train", "gan", *FAST, "--steps", "3", "--restarts", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "restarts.json").read_text())
    fids = [r["fid"] for r in summary["runs"]]
    assert len(fids) == 2 and summary["chosen_seed"] == fids.index(min(fids))
    assert rundir.read_config(out, kind="gan")["train"]["seed"] == summary["chosen_seed"]
    assert (out / "model.safetensors").is_file()


def test_gan_command_errors_are_one_line(tmp_path):
    def error(*args: str) -> str:
        r = CliRunner().invoke(cli, list(args))
        assert r.exit_code == 2, r.output
        return r.output

    assert "--restarts must be at least 1" in error("train", "gan", *FAST, "--restarts", "0")
    assert "per sample" in error(
        "train",
        "gan",
        *FAST,
        "--loss",
        "wgan-gp",
        "--d-norm",
        "batch",
        "--steps",
        "1",
        "--features",
        "none",
        "--out",
        str(tmp_path / "x"),
    )
    assert "even image side" in error(
        "train",
        "gan",
        "--data",
        "digits",
        "--image-size",
        "7",
        "--steps",
        "1",
        "--features",
        "none",
        "--out",
        str(tmp_path / "y"),
    )


def test_toy_and_theory_commands(tmp_path):
    r = invoke("gan", "theory")
    assert r.exit_code == 0 and "-1.386294" in r.output
    out = tmp_path / "toy"
    r = invoke("gan", "toy", "--data", "ring", "--steps", "20", "--frames", "2", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert (out / "training.gif").is_file() and (out / "history.png").is_file()
    history = json.loads((out / "history.json").read_text())["history"]
    assert history[-1]["step"] == 20 and "modes_covered" in history[-1]


def test_every_loss_is_registered():
    assert set(LOSSES) == {"ns", "minimax", "wgan-gp", "hinge"}
    from genlab.cli.gan import GAN_LOSSES

    assert set(GAN_LOSSES) == set(LOSSES)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")
def test_torchrun_trains_a_wgan_gp(tmp_path):
    """Two processes average each player's gradients themselves (DDP cannot double-backward the penalty)."""
    import os
    import subprocess
    import sys

    run = tmp_path / "ddp-gan"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "genlab",
    ]
    args = [
        "train",
        "gan",
        *FAST,
        "--loss",
        "wgan-gp",
        "--steps",
        "3",
        "--features",
        "none",
        "--out",
        str(run),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _, state = rundir.load_checkpoint(run)
    assert state["world_size"] == 2 and state["step"] == 3


def test_diffaugment_is_differentiable_and_does_what_it_says():
    x = torch.rand(6, 3, 16, 16, requires_grad=True)
    assert torch.equal(translation(x, ratio=0.0), x)  # no shift: the identity
    shifted = translation(x, torch.Generator().manual_seed(0))
    for i in range(6):  # each image is the original moved: its non-border pixels appear in x
        assert torch.isin(shifted[i, 0, 4:12, 4:12], x[i, 0]).all()
    cut = cutout(torch.ones(6, 1, 16, 16), torch.Generator().manual_seed(0))
    zeros = (cut == 0).flatten(1).sum(1)
    assert (zeros > 0).all() and (zeros <= 64).all()  # an 8x8 square, partly outside the image at most
    out = diff_augment(x, parse_policy("color,translation,cutout"), torch.Generator().manual_seed(1))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # G's gradient flows through the augmentation
    a = diff_augment(x, ("translation",), torch.Generator().manual_seed(2))
    assert torch.equal(a, diff_augment(x, ("translation",), torch.Generator().manual_seed(2)))
    with pytest.raises(GenlabError, match="unknown `augment`"):
        parse_policy("rotate")
    assert parse_policy("none") == ()


def test_minibatch_std_appends_the_group_spread():
    h = torch.randn(8, 3, 2, 2)
    out = minibatch_std(h)  # groups of 4: samples i and i + 2, i + 4, i + 6 share one group
    assert out.shape == (8, 4, 2, 2) and torch.equal(out[:, :3], h)
    expected = h.reshape(4, 2, 3, 2, 2).std(0, unbiased=False).mean(dim=(1, 2, 3))
    assert torch.allclose(out[:2, 3, 0, 0], expected) and torch.allclose(out[2:4, 3, 0, 0], expected)
    same = minibatch_std(torch.ones(4, 2, 2, 2))  # a collapsed batch: no spread at all
    assert torch.allclose(same[:, 2], torch.full((4, 2, 2), 1e-4), atol=1e-5)
    gan = GAN(GANConfig(image_size=8, minibatch_std=True))
    assert gan.discriminate(gan.generate(gan.latents(6))).shape == (6,)  # 6 samples: groups of 3
    with pytest.raises(GenlabError, match="per sample"):
        GANTask(
            DataConfig("digits"),
            GameConfig("wgan-gp"),
            monitor=MonitorConfig(features="none"),
            d_norm="layer",
            minibatch_std=True,
        )


def test_pacgan_judges_packs_of_samples():
    x = torch.arange(4 * 1 * 8 * 8, dtype=torch.float32).reshape(4, 1, 8, 8)
    packed = pack(x, 2)
    assert packed.shape == (2, 2, 8, 8)
    assert torch.equal(packed[1, 0], x[2, 0]) and torch.equal(packed[1, 1], x[3, 0])  # consecutive samples
    assert torch.equal(pack(x, 1), x)
    for arch in ("dcgan", "mlp"):
        gan = GAN(GANConfig(arch=arch, image_size=8, pack=2, dropout=0.3))
        assert gan.discriminator(torch.randn(6, 1, 8, 8)).shape == (3,)
        with pytest.raises(GenlabError, match="divisible by 2"):
            gan.discriminator(torch.randn(5, 1, 8, 8))
    # a pack's logit depends on every member, and only on its own pack's
    gan = GAN(GANConfig(image_size=8, pack=2, d_norm="none")).eval()
    a = torch.randn(4, 1, 8, 8)
    b = a.clone()
    b[1] += 1.0
    out_a, out_b = gan.discriminator(a), gan.discriminator(b)
    assert out_a[0] != out_b[0] and out_a[1] == out_b[1]
    with pytest.raises(GenlabError, match="^`pack` must be 1 or more"):
        GANConfig(arch="cgan", num_classes=10, pack=2)
    with pytest.raises(GenlabError, match="^`dropout` must be in"):
        GANConfig(dropout=1.0)


def test_pack_option_trains_and_refuses_bad_batches(tmp_path):
    run = tmp_path / "pac"
    r = CliRunner().invoke(
        cli, ["train", "gan", *FAST, "--pack", "2", "--dropout", "0.3", "--steps", "2", "--out", str(run)]
    )
    assert r.exit_code == 0, r.output
    assert rundir.read_config(run)["model"]["pack"] == 2
    r = CliRunner().invoke(
        cli, ["train", "gan", *FAST, "--pack", "3", "--steps", "1", "--out", str(tmp_path / "x")]
    )
    assert r.exit_code == 2 and "divisible" in r.output


def test_kmeans_recovers_separated_blobs_and_keeps_every_cluster():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = torch.arange(3).repeat_interleave(20)
    points = centres[truth] + 0.1 * torch.randn(60, 2, generator=g)
    found, assign = kmeans(points, 3, torch.Generator().manual_seed(1))
    # the same partition up to a renumbering, and each centre the mean of its points
    assert all(len(assign[truth == c].unique()) == 1 for c in range(3)) and len(assign.unique()) == 3
    for c in range(3):
        assert torch.allclose(found[c], points[assign == c].mean(0))
    # more clusters than distinct values: none is left empty
    _, assign = kmeans(torch.tensor([[0.0], [0.0], [1.0], [1.0]]), 3)
    assert sorted(assign.bincount(minlength=3).tolist()) == [1, 1, 2]
    with pytest.raises(GenlabError, match="k-means needs"):
        kmeans(points, 61)


def test_clusters_of_a_latent_follow_the_prior_by_inverse_cdf():
    prior = torch.tensor([0.25, 0.75])
    # Phi(z_0) below 0.25 is cluster 0: Phi(-0.6745) = 0.25
    z = torch.tensor([[-1.0, 5.0], [-0.7, -9.0], [-0.6, 0.0], [2.0, 0.0]])
    assert clusters_of(z, prior).tolist() == [0, 0, 1, 1]
    draws = clusters_of(torch.randn(40000, 4, generator=torch.Generator().manual_seed(0)), prior)
    assert draws.float().mean().item() == pytest.approx(0.75, abs=0.01)


def test_self_conditioned_gan_trains_on_clusters_not_labels(tmp_path):
    seed_step(0, -1)
    task = GANTask(
        DataConfig("digits"),
        GameConfig("hinge"),
        monitor=MonitorConfig(features="none"),
        width=8,
        z_dim=8,
        clusters=5,
        spectral_norm=True,
        d_norm="none",
    )
    data = task.train_data
    sizes = task.clusters.bincount(minlength=5)
    assert len(task.clusters) == len(data) and sizes.min() > 0
    assert torch.allclose(task.model.generator.cluster_prior, sizes / sizes.sum())
    batch = Batch(data.images[:6], data.labels[:6], [""] * 6, torch.arange(6))
    _, labels = task._real(batch, 0, torch.Generator())
    assert torch.equal(labels, task.clusters[:6])  # D sees the clusters, never the digit labels
    z = task.model.latents(8, torch.Generator().manual_seed(0))
    images = task.model.generate(z)  # no labels: each latent brings its cluster
    assert images.shape == (8, 1, 8, 8) and torch.equal(
        images, task.model.generate(z, clusters_of(z, task.model.generator.cluster_prior))
    )
    cfg = TrainConfig(
        steps=2, batch_size=16, eval_every=0, sample_every=0, checkpoint_every=0, progress=False
    )
    Trainer(task, cfg, tmp_path / "run").train()
    config = rundir.read_config(tmp_path / "run")
    again = GANTask.from_run_config(config)
    assert torch.equal(again.clusters, task.clusters)  # the same clusters on resume
    cfg3 = TrainConfig(
        steps=3, batch_size=16, eval_every=0, sample_every=0, checkpoint_every=0, progress=False
    )
    Trainer(again, cfg3, tmp_path / "run", resume=True).train()
    loaded = GAN.from_pretrained(tmp_path / "run")
    assert torch.allclose(loaded.generator.cluster_prior, task.model.generator.cluster_prior)
    with pytest.raises(GenlabError, match="^`clusters` must be 0"):
        GANConfig(arch="cgan", num_classes=10, clusters=5)
    result = invoke(
        "train",
        "gan",
        *FAST,
        "--clusters",
        "4",
        "--steps",
        "2",
        "--features",
        "none",
        "--out",
        str(tmp_path / "cli"),
    )
    assert result.exit_code == 0 and "4 k-means clusters" in result.output
    r = CliRunner().invoke(
        cli, ["train", "gan", *FAST, "--clusters", "99999", "--steps", "1", "--out", str(tmp_path / "z")]
    )
    assert r.exit_code == 2 and "more than the" in r.output


def test_mode_seeking_term_is_the_inverse_distance_ratio():
    images = torch.cat([torch.zeros(2, 1, 2, 2), torch.full((2, 1, 2, 2), 0.5)])
    latents = torch.cat([torch.zeros(2, 3), torch.full((2, 3), 2.0)])
    # d(images) = 0.5, d(z) = 2: the ratio is 0.25, the term 1 / 0.25 = 4
    assert mode_seeking_term(images, latents).item() == pytest.approx(4.0, rel=1e-4)
    # a G that ignores z (identical halves) is penalised hardest
    assert mode_seeking_term(torch.zeros(4, 1, 2, 2), latents).item() == pytest.approx(1e5)


def test_mode_seeking_pairs_share_their_condition(tmp_path):
    seed_step(0, -1)
    task = GANTask(
        DataConfig("digits"),
        GameConfig("hinge", mode_seeking=1.0),
        monitor=MonitorConfig(features="none"),
        width=8,
        z_dim=8,
        clusters=4,
        d_norm="none",
    )
    seen = []
    forward = task.model.generator.forward
    task.model.generator.forward = lambda z, labels=None: seen.append((z, labels)) or forward(z, labels)
    cfg = TrainConfig(
        steps=1, batch_size=16, eval_every=0, sample_every=0, checkpoint_every=0, progress=False
    )
    Trainer(task, cfg, tmp_path / "run").train()
    z, labels = [call for call in seen if len(call[0]) == 16][1]  # D's fakes, then G's own step:
    # its second half repeats the first's z_0 and cluster
    assert torch.equal(z[:8, 0], z[8:, 0]) and not torch.equal(z[:8, 1:], z[8:, 1:])
    assert torch.equal(labels[:8], labels[8:]) and torch.equal(
        labels, clusters_of(z, task.model.generator.cluster_prior)
    )
    record = [r for r in rundir.read_metrics(tmp_path / "run") if r["event"] == "train"][-1]
    assert record["mode_seeking"] > 0


# --- what the commands call: best of N, latent walks and arithmetic, plots, toy runs ------------------


def _fake_training(fids: dict[int, float | None], interrupted_seed: int | None = None):
    """A ``train(seed, run_dir)`` that writes a marker file and reports the FID ``fids`` gives the seed."""
    from genlab.train.engine import TrainResult

    def train(seed: int, run_dir):
        run_dir.mkdir(parents=True)
        (run_dir / "seed.txt").write_text(str(seed))
        metrics = {} if fids[seed] is None else {"fid": fids[seed], "modes_covered": seed}
        return TrainResult(run_dir, 3, seed == interrupted_seed, metrics)

    return train


def test_best_of_restarts_keeps_the_run_of_lowest_fid(tmp_path):
    from genlab.gan.restarts import best_of_restarts

    out, said = tmp_path / "best", []
    best = best_of_restarts(_fake_training({5: 40.0, 6: 30.0, 7: 35.0}), out, 5, 3, log=said.append)
    assert best.run_dir == out and (out / "seed.txt").read_text() == "6"  # moved up into OUT
    assert not (out / "restarts" / "seed-6").exists()
    assert (out / "restarts" / "seed-5" / "seed.txt").is_file()  # the others stay
    summary = json.loads((out / "restarts.json").read_text())
    assert summary["chosen_seed"] == 6 and [r["fid"] for r in summary["runs"]] == [40.0, 30.0, 35.0]
    assert summary["runs"][1]["run_dir"] == str(out)
    assert said[0] == "restart 1/3: seed 5" and said[-1].startswith("kept seed 6 (FID 30.00)")


def test_best_of_restarts_refuses_what_it_cannot_choose(tmp_path):
    from genlab.gan.restarts import best_of_restarts, check_restarts

    with pytest.raises(GenlabError, match="^`restarts` must be at least 1 \\(got 0\\)$"):
        check_restarts(0)
    with pytest.raises(GenlabError, match="^`resume` continues one run: drop `restarts`$"):
        check_restarts(2, resume=True)
    with pytest.raises(GenlabError, match="it needs `features`"):
        check_restarts(2, features="none")
    check_restarts(1, resume=True, features="none")  # one run: nothing to choose
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("")
    with pytest.raises(GenlabError, match="not empty; choose another `out`"):
        best_of_restarts(_fake_training({0: 1.0, 1: 2.0}), full, 0, 2)
    with pytest.raises(GenlabError, match="no FID to choose by; check `features`"):
        best_of_restarts(_fake_training({0: 1.0, 1: None}), tmp_path / "a", 0, 2, log=lambda m: None)
    with pytest.raises(GenlabError, match="stopped during restart 2"):
        best_of_restarts(_fake_training({0: 1.0, 1: 2.0}, 1), tmp_path / "b", 0, 2, log=lambda m: None)


def test_check_pack_wants_whole_packs():
    from genlab.gan.models import check_pack

    check_pack(1, 7)
    check_pack(2, 16)
    with pytest.raises(GenlabError, match="^`pack` 3 needs a `batch_size` divisible by it$"):
        check_pack(3, 16)


def _tiny_gan(arch: str = "dcgan", num_classes: int = 0) -> GAN:
    torch.manual_seed(0)
    return GAN(GANConfig(arch=arch, image_size=8, z_dim=4, width=4, num_classes=num_classes)).eval()


def test_interpolation_grid_walks_row_by_row_and_keeps_each_rows_class():
    from genlab.gan.latent import interpolation_grid

    gan = _tiny_gan()
    images = interpolation_grid(gan, rows=2, steps=3, mode="lerp", seed=1)
    g = torch.Generator().manual_seed(1)
    a, b = gan.latents(2, g), gan.latents(2, g)
    with torch.no_grad():
        ends = gan.generate(torch.cat([a, b]))
        middle = gan.generate((a[1:] + b[1:]) / 2)
    assert images.shape == (6, 1, 8, 8)
    assert torch.allclose(images[0], ends[0], atol=1e-6) and torch.allclose(images[2], ends[2], atol=1e-6)
    assert torch.allclose(images[3], ends[1], atol=1e-6) and torch.allclose(images[5], ends[3], atol=1e-6)
    assert torch.allclose(images[4], middle[0], atol=1e-6)  # row 2's midpoint, row-major
    cgan = _tiny_gan("cgan", num_classes=3)
    z = interpolation_grid(cgan, rows=2, steps=2, seed=0)
    g = torch.Generator().manual_seed(0)
    a, b = cgan.latents(2, g), cgan.latents(2, g)
    with torch.no_grad():
        row2 = cgan.generate(torch.stack([a[1], b[1]]), torch.tensor([1, 1]))  # row i: class i
    assert torch.allclose(z[2:], row2, atol=1e-6)
    with pytest.raises(GenlabError, match="^`rows` must be at least 1 \\(got 0\\)$"):
        interpolation_grid(gan, rows=0, steps=3)


def test_exemplars_by_index_parse_and_check_the_pool():
    from genlab.gan.latent import exemplars_by_index

    z = torch.arange(10.0).reshape(5, 2)
    chosen = exemplars_by_index(z, "1, 3", "b", labels=torch.tensor([0, 1, 2, 0, 1]))
    assert torch.equal(chosen.latents, z[[1, 3]]) and chosen.label == 1 and chosen.caption == "B: #1, 3"
    assert exemplars_by_index(z, "4", "a").label is None
    with pytest.raises(GenlabError, match="^`by` index takes latent indices like 3,17 \\(got `c` 1,x\\)$"):
        exemplars_by_index(z, "1,x", "c")
    with pytest.raises(GenlabError, match="^`a` indices must lie in 0..4 \\(got 5\\)$"):
        exemplars_by_index(z, "5", "a")
    with pytest.raises(GenlabError, match="`a` indices"):
        exemplars_by_index(z, ",", "a")


def test_exemplars_by_class_are_the_most_confident_samples():
    from genlab.gan.latent import exemplars_by_class

    z = torch.arange(8.0).reshape(4, 2)
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    chosen = exemplars_by_class(z, probs, ["cat", "dog"], "dog", "a", 2)
    assert torch.equal(chosen.latents, z[[1, 3]]) and chosen.label is None and chosen.caption == "A: dog"
    with pytest.raises(GenlabError, match="^unknown class 'cow' for `c`; the classifier knows cat, dog$"):
        exemplars_by_class(z, probs, ["cat", "dog"], "cow", "c", 2)
    never = torch.tensor([[0.9, 0.1], [0.8, 0.2]])  # no sample is classified a dog
    with pytest.raises(GenlabError, match="^none of the 2 samples looks like a dog; raise `pool`$"):
        exemplars_by_class(z[:2], never, ["cat", "dog"], "dog", "b", 1)


class _Brightness(torch.nn.Module):
    """A classifier of two classes, "dark" and "bright": mean pixel value below or above ``threshold``."""

    def __init__(self, threshold: float):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1000.0))
        self.threshold = threshold
        self.config = ClassifierConfig(num_classes=2, class_names=("dark", "bright"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean((1, 2, 3)) - self.threshold
        return torch.stack([-m, m], 1) * self.scale


def test_latent_arithmetic_draws_the_means_the_result_and_its_neighbours():
    from genlab.gan.latent import latent_arithmetic

    gan, calls = _tiny_gan(), []
    with torch.no_grad():  # the median brightness of the pool of 50 below: half dark, half bright
        median = gan.generate(gan.latents(50, torch.Generator().manual_seed(0))).mean((1, 2, 3)).median()

    def classifier():
        calls.append(1)
        return _Brightness(median.item())

    fig = latent_arithmetic(gan, "0,1", "2", "3,4", by="index", pool=10, seed=3, classifier=classifier)
    assert not calls  # by index: no classifier is looked for
    g = torch.Generator().manual_seed(3)
    z = gan.latents(10, g)
    result = z[[0, 1]].mean(0) - z[2] + z[[3, 4]].mean(0)
    near = result + 0.25 * torch.randn(4, 4, generator=g)
    latents = torch.cat([z[[0, 1]].mean(0, keepdim=True), z[2:3], z[[3, 4]].mean(0, keepdim=True)])
    with torch.no_grad():
        expected = gan.generate(torch.cat([latents, result[None], near]))
    assert fig.images.shape == (8, 1, 8, 8) and torch.allclose(fig.images, expected, atol=1e-6)
    assert fig.captions == ["A: #0,1", "B: #2", "C: #3,4", "A - B + C"] + [
        f"nearby {i}" for i in (1, 2, 3, 4)
    ]

    fig = latent_arithmetic(gan, "bright", "dark", "bright", exemplars=2, pool=50, classifier=classifier)
    assert calls == [1] and fig.captions[:3] == ["A: bright", "B: dark", "C: bright"]  # by class: the default
    assert fig.images[0].mean() > fig.images[1].mean()  # the mean bright latent against the mean dark one
    with pytest.raises(GenlabError, match="^`pool` and `exemplars` must be at least 1$"):
        latent_arithmetic(gan, "0", "1", "2", by="index", pool=0)
    with pytest.raises(GenlabError, match="needs a `classifier`"):
        latent_arithmetic(gan, "bright", "dark", "bright")
    with pytest.raises(GenlabError, match=r"`exemplars` \(5\) are chosen from the `pool` \(4\)"):
        latent_arithmetic(gan, "bright", "dark", "bright", exemplars=5, pool=4, classifier=classifier)
    cgan = _tiny_gan("cgan", num_classes=3)
    with pytest.raises(GenlabError, match="not a region of z: use `by` index$"):
        latent_arithmetic(cgan, "1", "2", "3", by="class", classifier=classifier)
    fig = latent_arithmetic(cgan, "1", "2", "4,5", pool=9)  # by index, the default; drawn with C's class 1
    z = cgan.latents(9, torch.Generator().manual_seed(0))
    with torch.no_grad():
        first = cgan.generate(z[1:2], torch.tensor([1]))
    assert torch.allclose(fig.images[:1], first, atol=1e-6)


def test_run_classifier_is_the_given_run_or_the_datas_own(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from genlab.gan import latent

    rundir.write_config(tmp_path, "gan", model={}, data={"name": "digits", "image_size": 8})
    seen = []
    monkeypatch.setattr(latent, "classifier_extractor", lambda run: SimpleNamespace(classifier=("run", run)))
    monkeypatch.setattr(
        latent,
        "resolve_extractor",
        lambda spec, data, log: seen.append((spec, data)) or SimpleNamespace(classifier="own"),
    )
    assert latent.run_classifier(tmp_path, "runs/clf") == ("run", "runs/clf") and not seen
    assert latent.run_classifier(tmp_path) == "own"
    assert seen == [("auto", DataConfig("digits", image_size=8))]


def test_plot_run_draws_a_runs_diagnostics(tmp_path):
    from genlab.gan.plots import plot_run

    rundir.write_config(tmp_path, "gan", model={}, class_names=["a", "b"])
    for step in (1, 2):
        record = {"event": "train", "step": step, "d_loss": 1.0, "g_loss": 0.5, "d_real": 0.6, "d_fake": 0.4}
        rundir.append_metrics(tmp_path, record)
    rundir.append_metrics(tmp_path, {"event": "eval", "step": 2, "fid": 9.0, "class_histogram": [3, 1]})
    assert plot_run(tmp_path) == tmp_path / "diagnostics.png" and (tmp_path / "diagnostics.png").is_file()
    other = plot_run(tmp_path, tmp_path / "other.png")
    assert other.name == "other.png" and other.is_file()
    rundir.write_config(tmp_path / "clf", "classifier", model={})
    with pytest.raises(GenlabError):
        plot_run(tmp_path / "clf")  # not a GAN run


def test_save_toy_run_writes_the_animation_plot_and_history(tmp_path):
    from genlab.gan.toy import save_toy_run

    result = train_toy(ToyConfig(data="ducks-cows", steps=10, frames=2, batch_size=16))
    gif, plot = save_toy_run(result, tmp_path / "toy")
    assert gif == tmp_path / "toy" / "training.gif" and gif.is_file() and plot.is_file()
    assert json.loads((tmp_path / "toy" / "history.json").read_text()) == json.loads(
        json.dumps(result.to_dict())
    )
