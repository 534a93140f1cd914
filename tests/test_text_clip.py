"""CLIP where the rest of genlab uses it: the CLIP score of `genlab eval`, and a frozen CLIP text tower
as the text encoder of a text-to-image model (`--text-encoder clip:RUN`)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from genlab.cli import cli
from genlab.clip.model import CLIP
from genlab.data import DataConfig
from genlab.diffusion.task import DiffusionConfig, DiffusionTask
from genlab.metrics.clip_score import clip_score
from genlab.train import TrainConfig, Trainer, seed_step

QUIET = dict(eval_every=0, sample_every=0, checkpoint_every=0, progress=False)


def test_clip_score_is_100_times_the_clamped_cosine():
    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def encode_images(self, x):
            return torch.nn.functional.normalize(x.flatten(1)[:, :2], dim=1)

        def encode_text(self, prompts):
            vectors = {"right": [1.0, 0.0], "up": [0.0, 1.0], "left": [-1.0, 0.0]}
            return torch.tensor([vectors[p] for p in prompts])

    images = torch.zeros(3, 1, 1, 2)
    images[:, 0, 0] = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    score = clip_score(Fixed(), images, ["right", "up", "left"])
    # cosines 1, 1/sqrt(2) and -1 (clamped to 0)
    assert score["value"] == pytest.approx(100 * (1 + 2**-0.5 + 0) / 3)
    assert score["generated"] == 3


def test_text_to_image_with_a_frozen_clip_text_encoder(clip_run, tmp_path):
    clip = CLIP.from_pretrained(clip_run)
    seed_step(0, -1)
    task = DiffusionTask(
        DataConfig("shapes"),
        DiffusionConfig(cond="text", sample_steps=1),
        text_encoder=f"clip:{clip_run}",
        base_channels=16,
        channel_mults=(1, 2),
        attention_levels=(1,),
        head_dim=16,
    )
    model = task.model
    assert model.config.freeze_text and model.config.text_source == f"clip:{clip_run}"
    assert model.config.tokenizer == clip.config.tokenizer and model.config.unet.context_dim == 32
    for name, value in clip.text_encoder.state_dict().items():
        assert torch.equal(model.text_encoder.state_dict()[name], value)
    before = {k: v.clone() for k, v in model.text_encoder.state_dict().items()}
    Trainer(task, TrainConfig(steps=2, batch_size=4, lr=1e-2, **QUIET), tmp_path / "t2i").train()
    after = task.model.text_encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # frozen: not trained further
    assert not any(p.requires_grad for p in task.model.text_encoder.parameters())

    out = tmp_path / "e.json"
    args = ["eval", str(tmp_path / "t2i"), "--n", "4", "--steps", "1", "--metrics", "clip,adherence"]
    result = CliRunner().invoke(
        cli, [*args, "--prompts", "single", "--clip", str(clip_run), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["clip"]["generated"] == 4 and 0.0 <= report["clip"]["value"] <= 100.0
    assert "CLIP score" in result.output
