"""Language-free text-to-image (LAFITE, Zhou et al. 2022; `genlab train diffusion --language-free`): the
denoiser reads one CLIP embedding, of the training image in training and of the prompt at sampling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from genlab.cli import cli
from genlab.clip.model import CLIP
from genlab.data import DataConfig
from genlab.diffusion.task import DiffusionConfig, DiffusionTask
from genlab.errors import GenlabError
from genlab.nn.text_unet import embedding_context, perturb_embeddings
from genlab.train import TrainConfig, Trainer, seed_step
from genlab.train.engine import Batch

QUIET = dict(eval_every=0, sample_every=0, checkpoint_every=0, progress=False)


def _task(clip_run, noise: float = 0.3) -> DiffusionTask:
    seed_step(0, -1)
    return DiffusionTask(
        DataConfig("shapes"),
        DiffusionConfig(cond="text", sample_steps=1, embedding_noise=noise),
        text_encoder=f"clip:{clip_run}",
        text_context="embedding",
        base_channels=16,
        channel_mults=(1, 2),
        attention_levels=(1,),
        head_dim=16,
    )


@pytest.mark.parametrize("xi", [0.0, 0.3, 1.0])
def test_perturbed_embeddings_are_unit_vectors_at_the_expected_angle(xi):
    # h' = (h + xi u) / |h + xi u| for a random unit u nearly orthogonal to h in 512 dimensions, so
    # cos(h', h) ~ 1 / sqrt(1 + xi^2)
    h = F.normalize(torch.randn(2000, 512, generator=torch.Generator().manual_seed(0)), dim=1)
    moved = perturb_embeddings(h, xi, torch.Generator().manual_seed(1))
    assert torch.allclose(moved.norm(dim=1), torch.ones(2000), atol=1e-5)
    assert float((moved * h).sum(1).mean()) == pytest.approx(1 / math.sqrt(1 + xi**2), abs=0.005)


def test_embedding_context_is_one_token_of_unit_rms_and_zero_where_dropped():
    e = F.normalize(torch.randn(3, 64), dim=1)
    out = embedding_context(e, torch.tensor([True, False, True]))
    context, mask = out["context"], out["context_mask"]
    assert context.shape == (3, 1, 64) and mask.shape == (3, 1) and bool(mask.all())
    assert float(context[0].pow(2).mean().sqrt()) == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(context[2, 0], e[2] * 8) and not context[1].any()


def test_the_denoiser_reads_the_images_clip_embedding_and_never_a_caption(clip_run):
    clip = CLIP.from_pretrained(clip_run).eval()
    task = _task(clip_run)
    model = task.model
    assert model.config.context == "embedding" and model.config.unet.context_dim == 16
    assert torch.equal(model.text_projection.weight, clip.text_projection.weight)
    images = task.train_data.images[:4]
    captions = task.train_data.captions[:4]
    with torch.no_grad():
        expected = clip.encode_images(images)
    clean = task._condition(None, captions, None, images)  # validation: no noise
    assert torch.allclose(clean["context"][:, 0], expected * 4, atol=1e-5)
    noisy = task._condition(None, captions, None, images, torch.Generator().manual_seed(0))
    cosine = F.cosine_similarity(noisy["context"][:, 0], expected, dim=1)
    assert bool((cosine < 0.9999).all()) and bool((cosine > 0.8).all())

    def loss(texts):
        batch = Batch(images=images, labels=None, captions=texts, indices=torch.arange(4))
        with torch.no_grad():
            return float(task.loss(model, batch, torch.Generator().manual_seed(3))[0])

    assert loss(captions) == loss(["a tiny blue box at the upper right"] * 4)

    # at sampling the prompt's CLIP text embedding takes the image's place; the empty prompt is the null
    cond, _ = model.encode_prompts(["a small red circle at the top left", ""])
    with torch.no_grad():
        text = clip.encode_text(["a small red circle at the top left"])
    assert torch.allclose(cond["context"][0, 0], text[0] * 4, atol=1e-5) and not cond["context"][1].any()


def test_language_free_training_keeps_clip_frozen_and_has_no_word_maps(clip_run, tmp_path):
    from genlab.pipelines import TextToImagePipeline

    task = _task(clip_run)
    frozen = {k: v.clone() for k, v in task.model.state_dict().items() if k.startswith("text_")}
    Trainer(task, TrainConfig(steps=2, batch_size=4, lr=1e-2, **QUIET), tmp_path / "run").train()
    after = task.model.state_dict()
    assert frozen and all(torch.equal(frozen[k], after[k]) for k in frozen)
    pipe = TextToImagePipeline.from_pretrained(tmp_path / "run")
    out = pipe("a tiny red disc at the upper left", num_inference_steps=1, num_images=1)
    assert out.tensors.shape == (1, 3, 32, 32)
    with pytest.raises(GenlabError, match="no per-word attention maps"):
        pipe("a red circle", num_inference_steps=1, num_images=1, return_attention_maps=True)


def test_a_language_free_run_needs_the_clip_it_was_built_from(clip_run, tmp_path):
    task = _task(clip_run)
    other = CLIP.from_pretrained(clip_run)
    with torch.no_grad():
        other.text_projection.weight.add_(1.0)
    other.save_pretrained(tmp_path / "other")
    model = task.model
    model.config.text_source = f"clip:{tmp_path / 'other'}"
    task._image_clip = None
    with pytest.raises(GenlabError, match="not the one this model was built from"):
        task.image_clip(model)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--language-free"], "--language-free reads CLIP embeddings"),
        (["--cond", "text", "--embedding-noise", "0.2"], "--embedding-noise applies to --language-free"),
    ],
)
def test_cli_says_what_language_free_training_needs(flags, message, tmp_path):
    args = ["train", "diffusion", "--data", "shapes", "--steps", "1", "--out", str(tmp_path / "r"), *flags]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / "r").exists()
