"""Editing with a diffusion model: inpainting keeps the known region, img2img at strength 0 is the identity,
and the `genlab edit` commands run end to end."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from genlab.cli import cli
from genlab.data import load_image
from genlab.diffusion import NoiseSchedule
from genlab.diffusion.generate import generate
from genlab.errors import GenlabError
from genlab.nn.unet import UNet, UNetConfig


def _net() -> UNet:
    torch.manual_seed(0)
    return UNet(
        UNetConfig(in_channels=1, image_size=8, base_channels=32, channel_mults=(1,), attention_levels=())
    )


@pytest.mark.parametrize("sampler", ["ddpm", "dpmpp-2m"])
def test_inpainting_leaves_the_known_region_unchanged(sampler):
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    keep = torch.zeros(1, 1, 8, 8)
    keep[..., :4, :] = 1  # keep the top half, repaint the bottom
    out = generate(
        _net(),
        NoiseSchedule(),
        "eps",
        (3, 1, 8, 8),
        init_images=images,
        keep=keep,
        steps=5,
        sampler=sampler,
        generator=torch.Generator().manual_seed(2),
    )
    assert torch.allclose(out[..., :4, :], images[..., :4, :], atol=1e-6)
    assert not torch.allclose(out[..., 4:, :], images[..., 4:, :], atol=1e-2)
    with pytest.raises(GenlabError, match="inpainting needs"):
        generate(_net(), NoiseSchedule(), "eps", (3, 1, 8, 8), keep=keep, steps=2)


def test_edit_commands(tmp_path):
    def run(*args: str) -> str:
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    diffusion = tmp_path / "diffusion"
    run(
        "train",
        "diffusion",
        "--data",
        "digits",
        "--cond",
        "class",
        "--steps",
        "2",
        "--base-channels",
        "32",
        "--channel-mults",
        "1",
        "--attention-levels",
        "",
        "--batch-size",
        "8",
        "--no-progress",
        "--out",
        str(diffusion),
    )
    from PIL import Image

    image, mask = tmp_path / "digit.png", tmp_path / "mask.png"
    Image.fromarray((torch.rand(8, 8).numpy() * 255).astype("uint8")).save(image)
    m = torch.zeros(1, 1, 8, 8)
    m[..., 4:, :] = 1
    Image.fromarray((m[0, 0].numpy() * 255).astype("uint8")).save(mask)
    out = tmp_path / "same.png"
    run("edit", "img2img", str(diffusion), str(image), "--strength", "0", "--n", "2", "--out", str(out))
    grid = load_image(out, None, 1)
    assert grid.shape[-1] > 8  # the input and its edits side by side
    run(
        "edit",
        "img2img",
        str(diffusion),
        str(image),
        "--class",
        "3",
        "--strength",
        "0.5",
        "--steps",
        "3",
        "--n",
        "2",
        "--out",
        str(tmp_path / "edit.png"),
    )
    run(
        "edit",
        "inpaint",
        str(diffusion),
        str(image),
        "--mask",
        str(mask),
        "--class",
        "3",
        "--steps",
        "3",
        "--n",
        "2",
        "--out",
        str(tmp_path / "inpaint.png"),
    )
    bad = CliRunner().invoke(cli, ["edit", "img2img", str(diffusion), str(image), "a prompt"])
    assert bad.exit_code == 2 and "takes no prompt" in bad.output
    small = tmp_path / "small_mask.png"
    Image.new("L", (6, 8), 255).save(small)
    bad = CliRunner().invoke(
        cli, ["edit", "inpaint", str(diffusion), str(image), "--mask", str(small), "--out", str(out)]
    )
    assert bad.exit_code == 2 and "the mask" in bad.output and "6x8 pixels" in bad.output, bad.output


def test_a_class_asked_of_a_classless_run_names_the_options(tmp_path):
    """generate() names the parameters (`cond`, `class_labels`); `genlab edit` its options, as before."""
    from PIL import Image

    from genlab.data import DataConfig
    from genlab.diffusion.task import DiffusionConfig, DiffusionTask
    from genlab.train import TrainConfig, Trainer, seed_step

    with pytest.raises(
        GenlabError, match=r"trained without classes \(`cond` none\); .* without `class_labels`"
    ):
        generate(_net(), NoiseSchedule(), "eps", (1, 1, 8, 8), class_labels=torch.tensor([3]), steps=2)
    seed_step(0, -1)
    task = DiffusionTask(
        DataConfig("digits"), DiffusionConfig(), base_channels=32, channel_mults=(1,), attention_levels=()
    )
    run = tmp_path / "none"
    cfg = TrainConfig(steps=1, batch_size=4, eval_every=0, sample_every=0, checkpoint_every=0, progress=False)
    Trainer(task, cfg, run).train()
    image, mask = tmp_path / "digit.png", tmp_path / "mask.png"
    Image.new("L", (8, 8), 0).save(image)
    Image.new("L", (8, 8), 255).save(mask)
    said = "error: this model was trained without classes (--cond none); sample it without --class\n"
    for args in (["img2img", str(run), str(image)], ["inpaint", str(run), str(image), "--mask", str(mask)]):
        result = CliRunner().invoke(cli, ["edit", *args, "--class", "3", "--steps", "2", "--n", "1"])
        assert result.exit_code == 2 and result.output == said, result.output
