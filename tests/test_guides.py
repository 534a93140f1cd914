"""Classifier and CLIP guidance (issue 24): noise-aware guides, the gradient-guided denoiser on a case with
a known answer (Bayes' rule for a Gaussian), the guidance sweep and the command line."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from genlab.cli import cli
from genlab.diffusion import SAMPLERS, NoiseSchedule, get_sigmas
from genlab.diffusion.guides import (
    ClassifierGuide,
    CLIPGuide,
    GradientGuidedDenoiser,
    guide_schedule,
    noisy_pixels,
)
from genlab.errors import GenlabError
from genlab.nn.classifier import Classifier, ClassifierConfig

SHORT = ["--steps", "2", "--eval-every", "0", "--sample-every", "0", "--no-progress"]

LINEAR = NoiseSchedule()
MU, S = 0.5, 1.0  # x0 ~ N(MU, S^2), as in test_diffusion_math
TAU, Y0 = 0.5, 2.0  # one noisy observation y = x0 + N(0, TAU^2), observed at Y0


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    sigma = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    return MU + S**2 / (S**2 + sigma**2) * (x - MU)


def observation_likelihood(x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log p(y = Y0 | x_t) exactly: given x = x0 + sigma eps, x0 is N(m, v) with m the denoiser's estimate
    and v = S^2 sigma^2 / (S^2 + sigma^2), so y is N(m, TAU^2 + v). A "classifier" of the noisy x_t with
    a known answer."""
    sigma = sigma.reshape(-1, *([1] * (x_t.ndim - 1))).to(x_t.dtype)
    x = x_t * (1 + sigma**2).sqrt()
    m = MU + S**2 / (S**2 + sigma**2) * (x - MU)
    var = TAU**2 + S**2 * sigma**2 / (S**2 + sigma**2)
    return (-((Y0 - m) ** 2) / (2 * var) - 0.5 * torch.log(2 * math.pi * var)).flatten(1).sum(1)


@pytest.mark.parametrize(("name", "steps"), [("dpmpp-2m", 50), ("euler-ancestral", 500), ("ddpm", 1000)])
def test_guidance_at_scale_one_samples_the_bayes_posterior(name, steps):
    """With the exact noisy likelihood as the guide, scale 1 adds grad log p(y | x_t) to the score of p(x_t),
    which is the score of p(x_t | y): every sampler must then draw x0 from the posterior p(x0 | y), the
    Gaussian with precision 1/S^2 + 1/TAU^2 and mean (MU/S^2 + Y0/TAU^2) / precision. A larger scale is
    not a posterior (p(y | x_t)^s is not the noisy likelihood of s observations), but it pulls further
    toward the observation (here past it) and narrows the samples: fidelity bought with diversity."""
    n = 20_000
    sigmas = get_sigmas(LINEAR, steps, "karras" if name != "ddpm" else "discrete")
    z = torch.randn(n, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    precision = 1 / S**2 + 1 / TAU**2
    mean, var = (MU / S**2 + Y0 / TAU**2) / precision, 1 / precision
    x = mean + math.sqrt(var + float(sigmas[0]) ** 2) * z  # the posterior's marginal at sigma_max
    draws = {}
    for scale in (1.0, 2.0):
        model = GradientGuidedDenoiser(gaussian_denoiser, observation_likelihood, scale)
        draws[scale] = SAMPLERS[name](model, x, sigmas, generator=torch.Generator().manual_seed(2))
    out = draws[1.0]
    assert abs(float(out.mean()) - mean) < 5 * math.sqrt(var / n), (float(out.mean()), mean)
    assert abs(float(out.var()) / var - 1) < 0.05, (float(out.var()), var)
    assert float(draws[2.0].mean()) > mean + 0.1 and float(draws[2.0].var()) < 0.9 * var  # (even past Y0)


def test_the_guided_estimate_is_dhariwal_and_nichol_algorithm_2():
    """D' = D + s sigma^2 grad_x log p, which in VP variables is eps' = eps - s sqrt(1 - abar) grad_{x_t}."""
    x = torch.randn(6, 1, 2, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sigma = torch.tensor([0.3, 1.0, 3.0, 10.0, 30.0, 100.0], dtype=torch.float64)
    scale = 2.5
    guided = GradientGuidedDenoiser(gaussian_denoiser, observation_likelihood, scale)(x, sigma)
    abar = (1 / (1 + sigma**2)).reshape(-1, 1, 1, 1)
    x_t = (x * abar.sqrt()).requires_grad_(True)
    (grad_t,) = torch.autograd.grad(observation_likelihood(x_t, sigma).sum(), x_t)
    eps = (x - gaussian_denoiser(x, sigma)) / sigma.reshape(-1, 1, 1, 1)
    eps_guided = eps - scale * (1 - abar).sqrt() * grad_t
    expected = (x_t.detach() - (1 - abar).sqrt() * eps_guided) / abar.sqrt()  # x0 from eps', Ho et al. eq. 15
    assert torch.allclose(guided, expected, rtol=0, atol=1e-9)
    unguided = GradientGuidedDenoiser(gaussian_denoiser, observation_likelihood, 0.0)(x, sigma)
    assert torch.equal(unguided, gaussian_denoiser(x, sigma))
    with pytest.raises(GenlabError, match="scale must be >= 0"):
        GradientGuidedDenoiser(gaussian_denoiser, observation_likelihood, -1.0)


def test_noisy_pixels_are_the_forward_process():
    images = torch.rand(4, 1, 5, 5, generator=torch.Generator().manual_seed(4))
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(5))
    schedule = guide_schedule(1000)
    t = torch.tensor([0, 10, 500, 999])
    out = noisy_pixels(images, t, schedule, noise)
    abar = schedule.abar(t).reshape(-1, 1, 1, 1)
    assert torch.allclose(out * 2 - 1, abar.sqrt() * (images * 2 - 1) + (1 - abar).sqrt() * noise, atol=1e-6)
    assert (out[0] - images[0]).abs().max() < 0.02  # t = 0: nearly clean
    assert abs(float((out[3] * 2 - 1).std()) - 1) < 0.3  # t = 999: nearly pure noise


def test_a_noise_aware_classifier_starts_as_the_clean_one_and_reads_the_timestep():
    torch.manual_seed(0)
    model = Classifier(ClassifierConfig(noise_timesteps=1000)).eval()
    x = torch.rand(3, 1, 28, 28)
    t = torch.tensor([0.0, 500.0, 999.0])
    assert torch.equal(model(x), model(x, torch.zeros(3)))
    assert torch.allclose(model(x, t), model(x), atol=1e-6)  # the timestep's last layer starts at zero
    torch.nn.init.normal_(model.time.mlp[-1].weight)
    assert not torch.allclose(model(x, t), model(x), atol=1e-3)
    clean = Classifier(ClassifierConfig())
    with pytest.raises(GenlabError, match="takes no timestep"):
        clean(x, t)
    with pytest.raises(GenlabError, match="noise-aware classifier"):
        ClassifierGuide(clean, torch.tensor([1]))
    with pytest.raises(GenlabError, match="classes 0..9"):
        ClassifierGuide(model, torch.tensor([10]))


def test_the_classifier_guide_raises_the_probability_of_its_class():
    """One guided estimate moves x0 along grad log p(y | x_t): the guide's log-probability of the class at
    the guided estimate rises with the scale, for a classifier with random weights."""
    torch.manual_seed(1)
    model = Classifier(ClassifierConfig(noise_timesteps=1000, widths=(4,), hidden=16, dropout=0.0)).eval()
    torch.nn.init.normal_(model.time.mlp[-1].weight, std=0.1)
    labels = torch.tensor([3, 7])
    guide = ClassifierGuide(model, labels)
    x = torch.randn(2, 1, 28, 28)
    sigma = torch.full((2,), 0.5)

    def denoiser(x, sigma):
        return torch.zeros_like(x)

    scores = []
    for scale in (0.0, 1.0, 4.0):
        d = GradientGuidedDenoiser(denoiser, guide, scale)(x, sigma)
        with torch.no_grad():  # the guide's score of x_t moved by the guided estimate's shift
            scores.append(guide((x + d) / (1 + 0.25) ** 0.5, sigma))
    assert (scores[1] > scores[0]).all() and (scores[2] > scores[1]).all()
    # the timestep the guide reads is the schedule's for that sigma
    assert float(guide.schedule.sigma_to_t(torch.tensor([float(LINEAR.sigmas[400])]))) == pytest.approx(400)


@pytest.fixture(scope="module")
def guides(served_runs, tmp_path_factory):
    root = tmp_path_factory.mktemp("guides")

    def _cli(*args: str) -> None:
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output

    _cli(
        "train", "classifier", "--data", "digits", "--noisy", "--out", str(root / "noisy-classifier"), *SHORT
    )
    _cli("train", "clip", "--data", "shapes", "--noisy", "--widths", "8,8", "--image-hidden", "16",
         "--text-width", "16", "--text-layers", "1", "--text-heads", "2", "--batch-size", "8",
         "--out", str(root / "noisy-clip"), *SHORT)  # fmt: skip
    return served_runs, root


def test_noisy_guides_train_from_the_command_line_and_resume(guides):
    _, root = guides
    config = json.loads((root / "noisy-classifier" / "config.json").read_text())
    assert config["model"]["noise_timesteps"] == 1000
    assert json.loads((root / "noisy-clip" / "config.json").read_text())["model"]["noise_timesteps"] == 1000
    result = CliRunner().invoke(
        cli, ["train", "classifier", "--out", str(root / "noisy-classifier"), "--resume", "--steps", "3",
              "--eval-every", "3", "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "timestep 500" in result.output
    metrics = [json.loads(line) for line in (root / "noisy-classifier" / "metrics.jsonl").open()]
    assert any("val_acc_t750" in m for m in metrics)
    bad = CliRunner().invoke(
        cli, ["train", "classifier", "--data", "digits", "--noisy", "--adversarial", "pgd"]
    )
    assert bad.exit_code != 0 and "--noisy" in bad.output and "Traceback" not in bad.output
    bad = CliRunner().invoke(
        cli, ["train", "classifier", "--data", "digits", "--noisy", "--noise-sigma", "0.2"]
    )
    assert bad.exit_code != 0 and "--noise-sigma" in bad.output


def test_sampling_with_a_guide_from_the_command_line(guides, tmp_path):
    runs, root = guides
    clf, clip = str(root / "noisy-classifier"), str(root / "noisy-clip")
    out = tmp_path / "guided.png"
    args = ["sample", str(runs / "diffusion"), "--class", "3", "--n", "2", "--steps", "2", "--out", str(out)]
    result = CliRunner().invoke(
        cli, [*args, "--guidance-type", "classifier", "--guide", clf, "--guide-scale", "2"]
    )
    assert result.exit_code == 0, result.output
    assert out.is_file()
    for sampler in ("euler-ancestral", "dpmpp-2m-sde", "heun"):
        result = CliRunner().invoke(cli, [*args, "--sampler", sampler, "--guidance", "0", "--guidance-type",
                                          "classifier", "--guide", clf])  # fmt: skip
        assert result.exit_code == 0, (sampler, result.output)
    text = ["sample", str(runs / "t2i"), "a red circle", "--n", "1", "--steps", "2", "--out", str(out)]
    result = CliRunner().invoke(cli, [*text, "--guidance-type", "clip", "--guide", clip])
    assert result.exit_code == 0, result.output
    for extra, message in [
        (["--guidance-type", "classifier"], "needs --guide"),
        (["--guide", clf], "goes with --guidance-type"),
        (["--guidance-type", "clip", "--guide", clip], "not a text-to-image run"),
        (["--sampler", "euler", "--eta", "1"], "--eta"),
        (["--sampler", "heun", "--s-churn", "-1"], "--s-churn"),
    ]:
        result = CliRunner().invoke(cli, [*args, *extra])
        assert result.exit_code != 0 and message in result.output, (extra, result.output)
        assert "Traceback" not in result.output
    result = CliRunner().invoke(cli, [*args, "--guidance-type", "classifier", "--guide", clip])
    assert result.exit_code != 0 and "Traceback" not in result.output


def test_the_guidance_sweep_of_genlab_eval(guides, tmp_path):
    runs, root = guides
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(
        cli,
        ["eval", str(runs / "diffusion"), "--classifier", str(runs / "classifier"), "--features",
         str(runs / "classifier"), "--n", "10", "--steps", "2", "--metrics", "accuracy", "--guidance-sweep",
         "1,3", "--guide", str(root / "noisy-classifier"), "--guide-scales", "2", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    rows = report["guidance"]
    assert [(r["guidance"], r["scale"]) for r in rows] == [("cfg", 1.0), ("cfg", 3.0), ("classifier", 2.0)]
    for row in rows:
        assert 0 <= row["fidelity"] <= 1 and 0 <= row["recall"] <= 1 and row["fid"] >= 0 and row["n"] == 10
    assert (tmp_path / "eval_guidance.png").is_file()
    assert "Guidance sweep" in (tmp_path / "eval.html").read_text()
    text = CliRunner().invoke(
        cli,
        ["eval", str(runs / "t2i"), "--n", "4", "--steps", "2", "--metrics", "adherence", "--prompts",
         "single", "--guidance-sweep", "3", "--guide", str(root / "noisy-clip"), "--guide-scales", "1",
         "--out", str(tmp_path / "t2i.json")],
    )  # fmt: skip
    assert text.exit_code == 0, text.output
    rows = json.loads((tmp_path / "t2i.json").read_text())["guidance"]
    assert [r["guidance"] for r in rows] == ["cfg", "clip"] and "color" in rows[1]["adherence"]
    bad = CliRunner().invoke(cli, ["eval", str(runs / "diffusion"), "--guide-scales", "2"])
    assert bad.exit_code != 0 and "--guide RUN and --guide-scales go together" in bad.output


def test_the_clip_guide_needs_a_noised_clip():
    from genlab.clip.model import CLIP, CLIPConfig

    with pytest.raises(GenlabError, match="noised CLIP"):
        CLIPGuide(CLIP(CLIPConfig()), ["a red circle"])
    noised = CLIP(CLIPConfig(noise_timesteps=1000, widths=(8, 8, 8))).eval()
    guide = CLIPGuide(noised, ["a red circle", "a blue square"])
    x = torch.randn(2, 3, 32, 32)
    score = guide(x, torch.full((2,), 1.0))
    assert score.shape == (2,) and torch.isfinite(score).all()


# ---------------------------------------------------------------- RePaint


def test_repaint_path_is_lugmayr_et_al_schedule():
    """The jump schedule of RePaint's code (get_schedule_jump), as sigma indices: 20 steps, jumps of 5,
    each stretch passed 3 times; every move is one step, and it ends at sigma = 0."""
    from genlab.diffusion.samplers import repaint_path

    assert repaint_path(6, 10, 10) == list(range(7))  # no jump fits: plain descent
    assert repaint_path(6, 2, 1) == list(range(7))
    path = repaint_path(20, 5, 3)
    assert path[:16] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 8, 7, 6, 5, 4, 5]
    assert path[0] == 0 and path[-1] == 20
    assert all(abs(b - a) == 1 for a, b in zip(path, path[1:], strict=False))
    downs = sum(b > a for a, b in zip(path, path[1:], strict=False))
    assert downs == 20 + 3 * (3 - 1) * 5  # jumps at t = 0, 5, 10 (indices 19, 14, 9), twice each
    with pytest.raises(GenlabError, match="`jump_length` must be"):
        repaint_path(20, 0, 3)


def correlated_denoiser(rho: float):
    """The exact denoiser of pairs (a, b) ~ N(0, [[1, rho], [rho, 1]]): E[x0 | x] = C (C + sigma^2 I)^-1 x."""
    cov = torch.tensor([[1.0, rho], [rho, 1.0]], dtype=torch.float64)

    def batched(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = float(sigma.reshape(-1)[0])
        gain = cov @ torch.linalg.inv(cov + s**2 * torch.eye(2, dtype=torch.float64))
        return x @ gain.T

    return batched


def test_repaint_samples_the_conditional_that_replacement_misses():
    """Pairs (a, b) with correlation 0.9, a known = 2: the right completion is b ~ N(1.8, 0.19). With
    replacement, b is drawn early, while the noisy a is mostly noise, and later steps cannot move it far:
    it lands short of 1.8 and too spread. RePaint's back-and-forth lets the known value flow into b, and
    draws nearly the right conditional. The kept value is returned exactly either way."""
    from genlab.diffusion.denoiser import InpaintingDenoiser
    from genlab.diffusion.samplers import sample_ddpm

    rho, a0, n = 0.9, 2.0, 4000
    sigmas = get_sigmas(LINEAR, 50, "discrete")
    known = torch.tensor([[a0, 0.0]], dtype=torch.float64).expand(n, 2)
    mask = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    x = float(sigmas[0]) * torch.randn(n, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    model = InpaintingDenoiser(correlated_denoiser(rho), known, mask)
    results = {}
    for r in (0, 1, 10):
        extra = dict(known=known, mask=mask, resample_jumps=r, jump_length=5) if r else {}
        out = sample_ddpm(model, x, sigmas, generator=torch.Generator().manual_seed(7), **extra)
        assert torch.all(out[:, 0] == a0)
        results[r] = (float(out[:, 1].mean()), float(out[:, 1].var()))
    target, spread = rho * a0, 1 - rho**2
    # measured: replacement 1.22 / 0.32, RePaint without jumps 1.21 / 0.28, with r = 10: 1.66 / 0.19
    assert abs(results[10][0] - target) < abs(results[0][0] - target) - 0.3, results
    assert abs(results[10][0] - target) < 0.2 and abs(results[10][1] - spread) < 0.03, results
    assert abs(results[0][1] - spread) > 0.1, results


def test_inpainting_with_repaint_and_its_measurement_from_the_command_line(served_runs, tmp_path):
    from PIL import Image

    from genlab.evaluation.inpainting import region_mask, seam

    run = str(served_runs / "diffusion")
    Image.new("L", (8, 8), 255).save(tmp_path / "digit.png")
    mask = Image.new("L", (8, 8), 0)
    mask.paste(255, (0, 4, 8, 8))
    mask.save(tmp_path / "mask.png")
    args = ["edit", "inpaint", run, str(tmp_path / "digit.png"), "--mask", str(tmp_path / "mask.png"),
            "--class", "3", "--n", "2", "--steps", "6", "--out", str(tmp_path / "inpaint.png")]  # fmt: skip
    result = CliRunner().invoke(
        cli, [*args, "--sampler", "ddpm", "--resample-jumps", "2", "--jump-length", "2"]
    )
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, [*args, "--resample-jumps", "2"])  # the default sampler is dpmpp-2m
    assert result.exit_code != 0 and "--sampler ddpm" in result.output and "Traceback" not in result.output
    out = tmp_path / "inpainting.json"
    result = CliRunner().invoke(
        cli,
        ["edit", "inpaint-eval", run, "--classifier", str(served_runs / "classifier"), "--n", "6", "--steps",
         "4", "--resample-jumps", "0,2", "--jump-length", "2", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert [r.get("resample_jumps") for r in rows] == [None, None, 0, 2]
    assert rows[2]["nfe"] == 4 and rows[3]["nfe"] == 4 + 2  # one jump (at t = 0) of 2 steps, passed twice
    # the seam: mean |difference| across the border of the kept region, here the bottom half's top edge
    keep = region_mask("bottom", 4)
    assert keep[0, 0, :2].all() and not keep[0, 0, 2:].any()
    image = torch.zeros(1, 1, 4, 4)
    image[..., 2:, :] = 0.5
    assert float(seam(image, keep)) == pytest.approx(0.5)
    assert float(seam(torch.ones(1, 1, 4, 4), keep)) == 0.0
