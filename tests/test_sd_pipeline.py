"""Stable Diffusion through genlab's own pipeline, samplers and commands, against diffusers (issue 21).

The checkpoints are tiny random ones that diffusers and transformers write as they write the real ones
(tests/sd_fixtures.py): an SD 1.5-like (epsilon) and an SD 2.1-like (v-prediction) model.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from genlab.cli import cli
from genlab.diffusion.schedules import NoiseSchedule
from genlab.errors import GenlabError
from genlab.pipelines import TextToImagePipeline, load_pipeline

diffusers = pytest.importorskip("diffusers")

PROMPT = "a photograph of an astronaut riding a horse"


def reference(folder, steps: int, guidance: float, negative: str, seed: int) -> torch.Tensor:
    """diffusers' StableDiffusionPipeline with the Euler scheduler on trailing timesteps, in fp32."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(
        pipe.scheduler.config, timestep_spacing="trailing"
    )
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        PROMPT,
        negative_prompt=negative,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
    )
    return out.images


def ours(folder, steps: int, guidance: float, negative: str, seed: int) -> torch.Tensor:
    pipe = TextToImagePipeline.from_pretrained(folder, device="cpu", precision="fp32")
    pipe.schedule = NoiseSchedule(dataclasses.replace(pipe.model.schedule, spacing="trailing"))
    out = pipe(
        PROMPT,
        negative_prompt=negative,
        num_inference_steps=steps,
        guidance_scale=guidance,
        sampler="euler",
        sigmas_kind="discrete",
        generator=torch.Generator().manual_seed(seed),
        num_images=1,
    )
    return out.tensors


@pytest.mark.parametrize("variant", ["sd15", "sd21"])
def test_four_guided_steps_with_a_negative_prompt_equal_diffusers(sd_checkpoints, variant):
    folder = sd_checkpoints[variant]
    want = reference(folder, 4, 7.5, "blue", seed=0)
    got = ours(folder, 4, 7.5, "blue", seed=0)
    assert got.shape == want.shape == (1, 3, 64, 64)
    assert (got - want).abs().max().item() < 1e-3
    # and the comparison can tell: another seed, or no negative prompt, is far away
    assert (ours(folder, 4, 7.5, "blue", seed=1) - want).abs().max().item() > 0.05
    assert (ours(folder, 4, 7.5, "", seed=0) - want).abs().max().item() > 1e-3


def test_the_checkpoint_serves_every_sampler_and_size(sd_checkpoints):
    pipe = load_pipeline(sd_checkpoints["sd15"], device="cpu", precision="fp32")
    assert isinstance(pipe, TextToImagePipeline)
    for sampler in ("ddpm", "ddim", "dpmpp-2m", "euler", "heun"):
        out = pipe(PROMPT, num_inference_steps=2, guidance_scale=7.5, sampler=sampler, num_images=1)
        assert out.tensors.shape == (1, 3, 64, 64) and torch.isfinite(out.tensors).all()
    out = pipe(PROMPT, num_inference_steps=1, num_images=1, height=48, width=80, guidance_scale=1.0)
    assert out.tensors.shape == (1, 3, 48, 80)
    with pytest.raises(GenlabError, match="`height` 50 is not divisible by 8"):
        pipe(PROMPT, num_inference_steps=1, height=50)


def test_attention_maps_cover_the_prompts_tokens(sd_checkpoints):
    pipe = load_pipeline(sd_checkpoints["sd15"], device="cpu", precision="fp32")
    out = pipe("a red horse", num_inference_steps=2, num_images=1, return_attention_maps=True, width=96)
    assert out.attention_maps.shape == (1, 77, 64, 96)
    assert (
        out.tokens[0][0] == "<start>" and out.tokens[0][-1] == "<end>" and "horse" in "".join(out.tokens[0])
    )
    # every pixel's weights over the 77 tokens sum to one (averaged over heads, layers and steps)
    torch.testing.assert_close(out.attention_maps.sum(1), torch.ones(1, 64, 96), atol=1e-4, rtol=0)


def test_the_preview_is_cheap_and_the_end_decoded(sd_checkpoints):
    pipe = load_pipeline(sd_checkpoints["sd15"], device="cpu", precision="fp32")
    frames = []
    out = pipe(PROMPT, num_inference_steps=3, num_images=1, on_step=lambda i, n, image: frames.append(image))
    assert [f.shape for f in frames] == [(1, 3, 8, 8)] * 4  # the latent grid, no decoder call
    assert out.tensors.shape == (1, 3, 64, 64)


def test_sample_command_runs_the_lectures_example(sd_checkpoints, tmp_path):
    out = tmp_path / "astronaut.png"
    args = ["sample", str(sd_checkpoints["sd15"]), PROMPT, "--seed", "0", "--steps", "2"]
    args += ["--sampler", "dpmpp-2m", "--guidance", "7.5", "--negative-prompt", "blue", "--size", "64x48"]
    result = CliRunner().invoke(
        cli, [*args, "--out", str(out), "--attention-maps", str(tmp_path / "maps.png")]
    )
    assert result.exit_code == 0, result.output
    assert (
        "1 images of 1 prompt(s), dpmpp-2m with 2 steps, guidance 7.5, negative prompt 'blue'"
        in result.output
    )
    assert Image.open(out).size[0] >= 64 and (tmp_path / "maps.png").is_file()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--size", "60x64"], "error: --size 60 is not divisible by 8"),
        (["--size", "big"], "--size must be WIDTHxHEIGHT"),
    ],
)
def test_bad_sizes_are_one_line(sd_checkpoints, tmp_path, args, said):
    result = CliRunner().invoke(
        cli, ["sample", str(sd_checkpoints["sd15"]), PROMPT, *args, "--out", str(tmp_path / "x.png")]
    )
    assert result.exit_code == 2 and said in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.png").exists()


def test_a_folder_that_is_not_a_checkpoint_is_one_line(tmp_path):
    (tmp_path / "unet").mkdir()
    result = CliRunner().invoke(cli, ["sample", str(tmp_path), PROMPT, "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "not a genlab run directory" in result.output


def test_a_pickle_checkpoint_says_how_to_convert(sd_checkpoints, tmp_path):
    import shutil

    folder = shutil.copytree(sd_checkpoints["sd15"], tmp_path / "sd")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    result = CliRunner().invoke(cli, ["sample", str(folder), PROMPT, "--out", str(tmp_path / "x.png")])
    assert (
        result.exit_code == 2 and "pickle weights" in result.output and "safe_serialization" in result.output
    )


def test_edit_img2img_and_inpaint_a_photo(sd_checkpoints, tmp_path):
    import numpy as np

    photo, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[:, :32] = (200, 40, 40)
    Image.fromarray(pixels).save(photo)
    white = np.zeros((64, 64), np.uint8)
    white[32:] = 255  # repaint the lower half
    Image.fromarray(white).save(mask)
    folder = str(sd_checkpoints["sd15"])
    common = ["--steps", "2", "--guidance", "7.5", "--device", "cpu"]
    result = CliRunner().invoke(
        cli, ["edit", "img2img", folder, str(photo), "a labrador in the style of Vermeer", *common,
              "--out", str(tmp_path / "a.png")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(
        cli, ["edit", "inpaint", folder, str(photo), "a red scarf", "--mask", str(mask), *common,
              "--out", str(tmp_path / "b.png")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # the kept half is returned exactly: the grid holds the input, then one edit of 64 x 64
    grid = np.asarray(Image.open(tmp_path / "b.png").convert("RGB")).astype(int)
    assert grid.shape[0] >= 64 and (tmp_path / "a.png").is_file()


def test_inpainting_keeps_the_unmasked_pixels_exactly(sd_checkpoints):
    pipe = load_pipeline(sd_checkpoints["sd15"], device="cpu", precision="fp32")
    image = torch.rand(1, 3, 64, 64)
    keep = torch.zeros(1, 1, 64, 64)
    keep[..., :32, :] = 1
    out = pipe(PROMPT, num_inference_steps=2, num_images=1, init_images=image, keep=keep)
    assert torch.equal(out.tensors[..., :32, :], image[..., :32, :])
    assert not torch.allclose(out.tensors[..., 32:, :], image[..., 32:, :])


def test_the_web_app_serves_a_checkpoint_with_a_live_preview(sd_checkpoints):
    import base64
    import io
    import json

    from fastapi.testclient import TestClient

    from genlab.server.app import create_app
    from genlab.server.registry import Registry

    client = TestClient(create_app(Registry([sd_checkpoints["sd15"]]), allowed_hosts=("testserver",)))
    (model,) = client.get("/api/models").json()["models"]
    assert model["kind"] == "text-to-image" and model["image_size"] == 64
    body = {"model": model["name"], "prompt": PROMPT, "negative_prompt": "blue", "steps": 2, "num_images": 1}
    with client.stream("POST", "/api/generate/stream", json=body) as r:
        text = "".join(r.iter_text())
    events = [
        (block.split("\n")[0][len("event: ") :], json.loads(block.split("\n")[1][len("data: ") :]))
        for block in text.strip().split("\n\n")
    ]

    def side(url: str) -> int:
        return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size[0]

    progress = [d for e, d in events if e == "progress"]
    assert [d["step"] for d in progress] == [0, 1, 2]
    assert all(side(d["preview"][0]) == 8 for d in progress)  # the latent preview, not the decoder
    assert events[-1][0] == "done" and side(events[-1][1]["images"][0]) == 64


@pytest.mark.parametrize("steps", [1, 4])
def test_distilled_sampling_reads_trailing_timesteps_from_the_checkpoint(sd_checkpoints, tmp_path, steps):
    """SD-Turbo's way: one to four steps, guidance off, the scheduler config saying "trailing"."""
    import json
    import shutil

    folder = shutil.copytree(sd_checkpoints["sd21"], tmp_path / "turbo")
    config_file = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text()) | {
        "_class_name": "EulerDiscreteScheduler",
        "timestep_spacing": "trailing",
    }
    config_file.write_text(json.dumps(config))
    index = json.loads((folder / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "EulerDiscreteScheduler"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = diffusers.StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    assert isinstance(ref.scheduler, diffusers.EulerDiscreteScheduler)
    ref.set_progress_bar_config(disable=True)
    want = ref(
        PROMPT,
        num_inference_steps=steps,
        guidance_scale=0.0,
        generator=torch.Generator().manual_seed(3),
        output_type="pt",
    ).images
    pipe = TextToImagePipeline.from_pretrained(folder, device="cpu", precision="fp32")
    assert pipe.schedule.config.spacing == "trailing"
    # no sigmas_kind: a checkpoint samples its own (discrete, trailing) timesteps by default
    got = pipe(PROMPT, num_inference_steps=steps, guidance_scale=1.0, sampler="euler",
               generator=torch.Generator().manual_seed(3), num_images=1).tensors  # fmt: skip
    assert (got - want).abs().max().item() < 1e-3


def test_large_images_are_decoded_in_tiles(sd_checkpoints, monkeypatch):
    from genlab.diffusion import stable_diffusion

    pipe = load_pipeline(sd_checkpoints["sd15"], device="cpu", precision="fp32")
    seen = []
    decode = pipe.model.vae.decode
    monkeypatch.setattr(
        pipe.model.vae, "decode", lambda z, tile=None: seen.append(tile) or decode(z, tile=tile)
    )
    z = torch.randn(1, 4, 8, 12)
    whole = pipe.model.decode_latents(z)
    monkeypatch.setattr(stable_diffusion, "TILE", 4)  # now 12 latent pixels are "over twice a tile"
    tiled = pipe.model.decode_latents(z)
    assert seen == [None, 4] and tiled.shape == whole.shape == (1, 3, 64, 96)


def test_too_little_memory_is_said_before_any_weight_is_read(sd_checkpoints, tmp_path, monkeypatch):
    from genlab.nn import sd_folder

    monkeypatch.setattr(sd_folder, "available_memory", lambda: 1000)
    monkeypatch.setattr(sd_folder, "load_weights", lambda *a: pytest.fail("weights were read"))
    result = CliRunner().invoke(
        cli, ["sample", str(sd_checkpoints["sd15"]), PROMPT, "--out", str(tmp_path / "x.png")]
    )
    assert result.exit_code == 2 and "GiB available" in result.output and "Traceback" not in result.output


def test_weights_that_do_not_fit_their_config_are_one_line(sd_checkpoints, tmp_path):
    import json
    import shutil

    folder = shutil.copytree(sd_checkpoints["sd15"], tmp_path / "sd")
    config_file = folder / "unet" / "config.json"
    config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"cross_attention_dim": 16}))
    result = CliRunner().invoke(cli, ["sample", str(folder), PROMPT, "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "do not fit the model in its config.json" in result.output
