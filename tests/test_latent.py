"""Latent diffusion and its autoencoder, the DiT backbone and the upscaler: shapes, the KL formula, the
scale factor, the latent pipeline round trip, and the commands end to end."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from genlab.cli import cli
from genlab.data import save_grid
from genlab.diffusion import NoiseSchedule
from genlab.diffusion.generate import generate
from genlab.diffusion.networks import LatentDiffusion, load_network, sample_shape
from genlab.errors import GenlabError
from genlab.nn.dit import DiT, DiTConfig
from genlab.nn.unet import UNet, UNetConfig
from genlab.nn.vae import VAE, VAEConfig, kl_divergence, latent_statistics, scale_factor


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _fails(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    return result.output


@pytest.mark.parametrize("f", [2, 4, 8])
def test_vae_encode_decode_shapes(f):
    vae = VAE(VAEConfig(in_channels=3, image_size=32, latent_channels=5, downsample=f, base_channels=8))
    x = torch.rand(2, 3, 32, 32)
    mean, logvar = vae.encode(x)
    assert mean.shape == logvar.shape == (2, 5, 32 // f, 32 // f) == (2, *vae.config.latent_shape)
    images = vae.decode(mean)
    assert images.shape == x.shape and images.min() >= 0 and images.max() <= 1
    recon, m, lv = vae(x * 2 - 1, torch.Generator().manual_seed(0))
    assert recon.shape == x.shape and torch.equal(m, mean) and torch.equal(lv, logvar)
    with pytest.raises(GenlabError, match="takes images of 3x32x32"):
        vae.encode(torch.rand(2, 1, 32, 32))
    with pytest.raises(GenlabError, match="not divisible"):
        VAEConfig(image_size=28, downsample=8)
    with pytest.raises(GenlabError, match="`downsample`"):
        VAEConfig(downsample=3)


def test_kl_divergence_is_the_closed_form():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    assert torch.allclose(kl_divergence(mean, logvar), expected, atol=1e-5)
    # hand-computed: mu = 1, sigma = 1 in one dimension gives 1/2; the prior itself gives 0
    assert kl_divergence(torch.ones(1, 1), torch.zeros(1, 1)).item() == pytest.approx(0.5)
    assert kl_divergence(torch.zeros(1, 7), torch.zeros(1, 7)).item() == 0.0


def test_scale_factor_gives_unit_variance_latents():
    g = torch.Generator().manual_seed(0)
    mean, std = 3.0 * torch.randn(4000, 4, 2, 2, generator=g), torch.full((4000, 4, 2, 2), 4.0)
    s = scale_factor(mean, std, torch.Generator().manual_seed(1))
    assert s == pytest.approx(1 / 5.0, rel=0.02)  # sqrt(3^2 + 4^2) = 5


class _Oracle(torch.nn.Module):
    """Predicts the same clean latent z* whatever it is given ("x0" parameterization)."""

    def __init__(self, target: torch.Tensor):
        super().__init__()
        self.config = DiTConfig(in_channels=target.shape[1], image_size=target.shape[2], patch_size=1)
        self.target = torch.nn.Parameter(target, requires_grad=False)

    def forward(self, x, t, **_):
        return self.target.expand_as(x)


def test_latent_pipeline_round_trip():
    torch.manual_seed(0)
    vae = VAE(VAEConfig(image_size=8, downsample=2, base_channels=8))
    denoiser = DiT(DiTConfig(in_channels=4, image_size=4, patch_size=1, width=32, depth=1, heads=2))
    model = LatentDiffusion.around(vae, denoiser, scale=0.5)
    images = torch.rand(2, 1, 8, 8)
    # encode / decode cross the scale: decoding the encoded image is the autoencoder's reconstruction
    z = model.encode_images(images)
    assert z.shape == (2, *sample_shape(model)) == (2, 4, 4, 4)
    assert torch.allclose(model.decode_latents(z), vae.decode(vae.encode(images)[0]), atol=1e-6)
    # strength 0 returns the images; a sampler with the exact model returns the decoded data
    schedule = NoiseSchedule()
    same = generate(model, schedule, "eps", (2, 4, 4, 4), init_images=images, strength=0.0)
    assert torch.equal(same, images)
    target = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    oracle = LatentDiffusion.around(vae, denoiser, scale=0.5)
    oracle.net = _Oracle(target)
    out = generate(oracle, schedule, "x0", (2, 4, 4, 4), steps=5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, vae.decode(target / 0.5).expand(2, -1, -1, -1), atol=1e-5)
    # inpainting in latent space still returns the kept pixels exactly
    keep = torch.zeros(1, 1, 8, 8)
    keep[..., :, :4] = 1
    painted = generate(model, schedule, "eps", (2, 4, 4, 4), init_images=images, keep=keep, steps=3)
    assert torch.allclose(painted[..., :4], images[..., :4], atol=1e-6)


def test_unet_upscaler_output_size_and_condition():
    net = UNet(UNetConfig(image_size=8, base_channels=16, channel_mults=(1, 2), lowres_channels=1))
    x, t = torch.randn(3, 1, 8, 8), torch.full((3,), 10.0)
    assert net(x, t, lowres=torch.rand(3, 1, 4, 4)).shape == (3, 1, 8, 8)
    assert net(x, t, lowres=torch.rand(3, 1, 2, 2)).shape == (3, 1, 8, 8)  # 4x as well
    with pytest.raises(GenlabError, match="upscales"):
        net(x, t)
    torch.nn.init.normal_(net.conv_out.weight)  # zero-initialised: make the output depend on its input
    a = net(x, t, lowres=torch.zeros(3, 1, 4, 4))
    b = net(x, t, lowres=torch.ones(3, 1, 4, 4))
    assert not torch.allclose(a, b)
    out = generate(
        net, NoiseSchedule(), "eps", (3, 1, 8, 8), lowres=torch.rand(3, 1, 4, 4), steps=2, guidance_scale=3.0
    )
    assert out.shape == (3, 1, 8, 8)
    with pytest.raises(GenlabError, match="one low-resolution image per output"):
        generate(net, NoiseSchedule(), "eps", (3, 1, 8, 8), lowres=torch.rand(2, 1, 4, 4), steps=2)


def test_latent_statistics_batches_like_one_call():
    vae = VAE(VAEConfig(image_size=8, downsample=2, base_channels=8)).eval()
    images = torch.rand(7, 1, 8, 8)
    mean, std = latent_statistics(vae, images, batch_size=3)
    m, lv = vae.encode(images)
    assert torch.allclose(mean, m, atol=1e-6) and torch.allclose(std, (0.5 * lv).exp(), atol=1e-6)


def test_the_scale_factor_of_a_run_is_its_ema_weights_over_its_training_images(tmp_path):
    """What `genlab train vae` writes to RUN/latent.json once it has trained (genlab.latent)."""
    from dataclasses import asdict

    from genlab.data import DataConfig, load_splits
    from genlab.latent.task import LATENT_FILE, write_scale_factor

    config = VAEConfig(image_size=8, downsample=2, base_channels=8)
    torch.manual_seed(0)
    weights, ema = VAE(config), VAE(config)
    data = DataConfig("digits", split_seed=3, val_fraction=0.2)
    weights.save_pretrained(tmp_path, ema=ema, data=asdict(data))
    stats, measured_on = write_scale_factor(tmp_path)

    train_images = load_splits("digits", 3, 0.2)[0].images
    mean, std = latent_statistics(ema.eval(), train_images)
    assert measured_on == data and stats["images"] == len(train_images)
    assert stats["scale_factor"] == scale_factor(mean, std, torch.Generator().manual_seed(0))
    assert stats["latent_shape"] == [4, 4, 4]
    assert json.loads((tmp_path / LATENT_FILE).read_text()) == stats


def test_vae_latent_dit_and_upscale_commands(tmp_path):
    vae, ldm, dit, up, base = (tmp_path / n for n in ("vae", "ldm", "dit", "up", "base"))
    short = ["--steps", "4", "--eval-every", "4", "--sample-every", "4", "--no-progress"]
    out = _run(
        "train",
        "vae",
        "--data",
        "digits",
        "--downsample",
        "2",
        "--base-channels",
        "8",
        "--out",
        str(vae),
        *short,
    )
    assert "latent scale factor" in out
    stats = json.loads((vae / "latent.json").read_text())
    assert stats["latent_shape"] == [4, 4, 4] and stats["scale_factor"] > 0
    assert (vae / "samples" / "step_000004.png").is_file()

    _run(
        "train", "diffusion", "--data", "digits", "--cond", "class", "--latent", str(vae),
        "--channel-mults", "1", "--attention-levels", "0", "--out", str(ldm), *short,
    )  # fmt: skip
    network, diffusion, _ = load_network(ldm)
    assert isinstance(network, LatentDiffusion) and diffusion.latent == str(vae)
    assert network.config.scale_factor == pytest.approx(stats["scale_factor"])
    trained = VAE.from_pretrained(vae)
    for name, tensor in trained.state_dict().items():  # the autoencoder travels inside the run
        assert torch.equal(network.vae.state_dict()[name], tensor)
    _run("sample", str(ldm), "--class", "3", "--n", "2", "--steps", "2", "--out", str(tmp_path / "s.png"))
    _run("train", "diffusion", "--out", str(ldm), "--resume", "--steps", "6", "--no-progress")

    _run(
        "train", "diffusion", "--data", "digits", "--cond", "class", "--backbone", "dit", "--dit-width", "32",
        "--dit-depth", "1", "--dit-heads", "2", "--out", str(dit), *short,
    )  # fmt: skip
    assert isinstance(load_network(dit)[0], DiT)
    _run("sample", str(dit), "--n", "2", "--steps", "2", "--out", str(tmp_path / "d.png"))

    _run(
        "train", "diffusion", "--data", "digits", "--cond", "class", "--upscale", "2",
        "--channel-mults", "1,2", "--attention-levels", "1", "--out", str(up), *short,
    )  # fmt: skip
    _run(
        "train", "diffusion", "--data", "digits", "--image-size", "4", "--cond", "class",
        "--channel-mults", "1", "--attention-levels", "0", "--out", str(base), *short,
    )  # fmt: skip
    out = _run("edit", "upscale", str(up), "--base", str(base), "--class", "3", "--n", "2", "--steps", "2",
               "--out", str(tmp_path / "u.png"))  # fmt: skip
    assert "4x4 -> 8x8" in out
    small = save_grid(tmp_path / "small.png", torch.rand(1, 1, 4, 4), scale=1)
    _run("edit", "upscale", str(up), str(small), "--steps", "2", "--out", str(tmp_path / "u2.png"))

    from genlab.pipelines import DiffusionPipeline, load_pipeline

    for run in (ldm, dit, up, base):  # latent, transformer and upscaler runs: one loader serves them all
        assert type(load_pipeline(run, device="cpu")) is DiffusionPipeline
    assert load_pipeline(up, device="cpu").upscale == 2
    assert load_pipeline(ldm, device="cpu").image_shape == (1, 8)  # the pixels the decoder makes
    with pytest.raises(GenlabError, match="holds a 'vae' run"):
        load_pipeline(vae)

    assert "not an upscaler" in _fails("edit", "upscale", str(ldm), str(small))
    assert "give them" in _fails("sample", str(up), "--steps", "2", "--out", str(tmp_path / "x.png"))
    assert "not both" in _fails("edit", "upscale", str(up), str(small), "--base", str(base))
    assert "is not divisible" in _fails(
        "train", "vae", "--data", "digits", "--image-size", "12", "--downsample", "8",
        "--out", str(tmp_path / "x"), *short,
    )  # fmt: skip
    assert "pixel-space U-Net" in _fails(
        "train", "diffusion", "--data", "digits", "--upscale", "2", "--backbone", "dit",
        "--out", str(tmp_path / "x"), *short,
    )  # fmt: skip
    assert "encodes 1x8" in _fails(
        "train", "diffusion", "--data", "digits", "--image-size", "16", "--latent", str(vae),
        "--out", str(tmp_path / "x"), *short,
    )  # fmt: skip
    out = _run("bench", "compare", str(ldm), str(dit), "--n", "2", "--steps", "2", "--repeats", "1")
    assert "latents 4x4x4" in out and "| dit |" in out


def test_perceptual_term_uses_the_classifiers_features(tmp_path):
    from genlab.data import DataConfig
    from genlab.latent.task import VAELossConfig, VAETask
    from genlab.nn.classifier import Classifier, ClassifierConfig

    torch.manual_seed(0)
    judge = Classifier(ClassifierConfig(in_channels=1, image_size=8, num_classes=10, widths=(8,), hidden=16))
    judge.save_pretrained(tmp_path / "judge")
    task = VAETask(
        DataConfig("digits"), VAELossConfig(perceptual=str(tmp_path / "judge"), perceptual_weight=2.0),
        downsample=2, base_channels=8,
    )  # fmt: skip
    images = task.train_data.images[:4]
    terms = task.terms(task.model, images, torch.Generator().manual_seed(0))
    expected = terms["reconstruction"] + 1e-3 * terms["kl"] + 2.0 * terms["perceptual"]
    assert terms["perceptual"] > 0 and torch.allclose(terms["loss"], expected)
    terms["loss"].backward()
    assert task.model.decoder.net[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in task.judge.parameters())  # the judge is frozen
    with pytest.raises(GenlabError, match="takes 1x8"):
        VAETask(DataConfig("digits", image_size=16), VAELossConfig(perceptual=str(tmp_path / "judge")))


def test_text_conditional_latent_diffusion(tmp_path):
    from genlab.data import DataConfig
    from genlab.diffusion.task import DiffusionConfig, DiffusionTask
    from genlab.pipelines import TextToImagePipeline
    from genlab.train import TrainConfig, Trainer

    short = ["--steps", "2", "--eval-every", "0", "--sample-every", "0", "--no-progress"]
    _run(
        "train",
        "vae",
        "--data",
        "shapes",
        "--downsample",
        "4",
        "--base-channels",
        "8",
        "--out",
        str(tmp_path / "vae"),
        *short,
    )
    task = DiffusionTask(
        DataConfig("shapes"), DiffusionConfig(cond="text", latent=str(tmp_path / "vae"), sample_steps=2),
        text_options=dict(width=32, layers=1, heads=2), base_channels=16, channel_mults=(1, 2),
        attention_levels=(1,), head_dim=16,
    )  # fmt: skip
    cfg = TrainConfig(steps=2, batch_size=8, eval_every=2, sample_every=2, checkpoint_every=0, progress=False)
    Trainer(task, cfg, tmp_path / "ldm").train()
    pipe = TextToImagePipeline.from_pretrained(tmp_path / "ldm", device="cpu")
    out = pipe("a red circle", num_images=2, num_inference_steps=2, return_attention_maps=True)
    assert out.tensors.shape == (2, 3, 32, 32) and out.attention_maps.shape[-1] == 32
    assert pipe.image_shape == (3, 32)


def test_text_conditional_dit(tmp_path):
    from genlab.diffusion.task import DiffusionTask
    from genlab.nn.text_unet import TextUNet
    from genlab.pipelines import TextToImagePipeline

    short = ["--steps", "2", "--eval-every", "2", "--sample-every", "2", "--no-progress"]
    _run(
        "train", "diffusion", "--data", "shapes", "--cond", "text", "--backbone", "dit", "--patch-size", "4",
        "--dit-width", "32", "--dit-depth", "1", "--dit-heads", "2", "--text-width", "32",
        "--text-layers", "1", "--eval-samples", "0", "--out", str(tmp_path / "t2i-dit"), *short,
    )  # fmt: skip
    network, diffusion, config = load_network(tmp_path / "t2i-dit")
    assert isinstance(network, TextUNet) and isinstance(network.unet, DiT)
    assert network.config.dit.context_dim == 32 and network.unet.blocks[0].cross is not None
    pipe = TextToImagePipeline.from_pretrained(tmp_path / "t2i-dit", device="cpu")
    out = pipe(["a red circle", "a blue square"], num_images=1, num_inference_steps=2)
    assert out.tensors.shape == (2, 3, 32, 32)
    # the prompt reaches the output through cross-attention and the pooled text
    for p in network.unet.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x, t = torch.randn(1, 3, 32, 32), torch.full((1,), 300.0)
    a, _ = network.encode_prompts(["a red circle"])
    b, _ = network.encode_prompts(["a large green triangle at the bottom"])
    assert not torch.allclose(network(x, t, **a), network(x, t, **b))
    assert DiffusionTask.from_run_config(config).model.config == network.config  # resume rebuilds it
