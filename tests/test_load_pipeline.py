"""`genlab.load_pipeline`: one loader picks the pipeline of every kind of run from its config.json (the
latent, transformer and upscaler runs are checked in tests/test_latent.py)."""

from __future__ import annotations

import pytest
import torch

import genlab
from genlab.errors import GenlabError
from genlab.pipelines import DiffusionPipeline, TextToImagePipeline, load_pipeline, pipeline_kind
from genlab.pipelines.gan import GANPipeline


def test_every_kind_of_run_loads_through_load_pipeline(served_runs):
    expected = {"diffusion": DiffusionPipeline, "t2i": TextToImagePipeline, "gan": GANPipeline}
    for name, cls in expected.items():
        pipe = load_pipeline(served_runs / name, device="cpu")
        assert type(pipe) is cls, name
    g = torch.Generator().manual_seed(0)
    images = load_pipeline(served_runs / "diffusion", device="cpu")(
        num_images=2, class_labels=3, num_inference_steps=2, generator=g
    )
    assert images.tensors.shape[0] == 2
    with pytest.raises(GenlabError, match="holds a 'classifier' run, which makes no images"):
        load_pipeline(served_runs / "classifier")


def test_pipeline_kind_reads_the_config():
    assert pipeline_kind({"kind": "gan"}) == "gan"
    assert pipeline_kind({"kind": "diffusion", "diffusion": {"cond": "class"}}) == "diffusion"
    assert pipeline_kind({"kind": "diffusion", "diffusion": {"cond": "text"}}) == "text-to-image"
    with pytest.raises(GenlabError, match="'clip' run"):
        pipeline_kind({"kind": "clip"})


def test_a_missing_run_says_so(tmp_path):
    with pytest.raises(GenlabError, match="no such|does not exist|not a run"):
        load_pipeline(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()
    assert genlab.load_pipeline is load_pipeline


def test_edit_loads_through_it_and_refuses_a_gan(served_runs, tmp_path):
    from click.testing import CliRunner

    from genlab.cli import cli
    from genlab.data import save_grid

    image = save_grid(tmp_path / "in.png", torch.rand(1, 1, 8, 8), scale=1)
    result = CliRunner().invoke(cli, ["edit", "img2img", str(served_runs / "gan"), str(image)])
    assert result.exit_code != 0 and "is a GAN; editing needs an image diffusion run" in result.output
    out = tmp_path / "edit.png"
    args = ["edit", "img2img", str(served_runs / "diffusion"), str(image), "--class", "3", "--n", "2"]
    result = CliRunner().invoke(cli, [*args, "--steps", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file()
