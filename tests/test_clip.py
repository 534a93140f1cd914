"""CLIP: the loss against hand-computed values, the model's invariants, zero-shot and collapse on toy data,
the saved run, and the commands."""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner

from genlab import rundir
from genlab.cli import cli
from genlab.clip import (
    CLIP,
    CLIPConfig,
    clip_loss,
    matched_only_loss,
    mean_pairwise_cosine,
    zero_shot_classify,
    zero_shot_set,
)
from genlab.data import save_grid
from genlab.errors import GenlabError
from genlab.nn.text import TextEncoderConfig, Tokenizer

COLORS = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.85, 0.1),
    "blue": (0.1, 0.2, 0.95),
    "yellow": (0.95, 0.9, 0.1),
    "magenta": (0.9, 0.1, 0.9),
    "cyan": (0.1, 0.9, 0.9),
}


def _ce(row: list[float], target: int) -> float:
    return -math.log(math.exp(row[target]) / sum(math.exp(v) for v in row))


def test_clip_loss_equals_the_hand_computed_symmetric_cross_entropy():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    # cosines [[0.6, 0.0], [0.8, 1.0]], times the scale 2: logits [[1.2, 0.0], [1.6, 2.0]]
    rows = (_ce([1.2, 0.0], 0) + _ce([1.6, 2.0], 1)) / 2  # each image picks its caption
    cols = (_ce([1.2, 1.6], 0) + _ce([0.0, 2.0], 1)) / 2  # each caption picks its image
    assert float(clip_loss(images, texts, 2.0)) == pytest.approx((rows + cols) / 2, rel=1e-6)
    assert float(clip_loss(images, texts, torch.tensor(2.0))) == pytest.approx((rows + cols) / 2, rel=1e-6)
    # matched pairs only: mean of 1 - cosine over the diagonal
    assert float(matched_only_loss(images, texts)) == pytest.approx((0.4 + 0.0) / 2)


def test_clip_loss_on_three_pairs_and_its_extremes():
    e = torch.eye(3)
    # perfect alignment: logits s on the diagonal, 0 elsewhere -> CE = -log(e^s / (e^s + 2))
    s = 5.0
    assert float(clip_loss(e, e, s)) == pytest.approx(-math.log(math.exp(s) / (math.exp(s) + 2)), rel=1e-6)
    # all embeddings alike: every logit equal, the loss is log N whatever the scale
    same = torch.ones(3, 3) / math.sqrt(3)
    assert float(clip_loss(same, same, 50.0)) == pytest.approx(math.log(3), rel=1e-6)
    assert float(matched_only_loss(same, same)) == pytest.approx(0.0, abs=1e-6)  # collapse is a minimum
    with pytest.raises(ValueError):
        clip_loss(e, e[:2], 1.0)


def test_mean_pairwise_cosine():
    assert mean_pairwise_cosine(torch.ones(5, 4)) == pytest.approx(1.0)
    assert mean_pairwise_cosine(torch.eye(4)) == pytest.approx(0.0)
    # two opposite vectors and one orthogonal: cosines -1, 0, 0 -> mean -1/3
    assert mean_pairwise_cosine(torch.tensor([[1.0, 0], [-1.0, 0], [0, 3.0]])) == pytest.approx(-1 / 3)


def _tiny(captions: list[str], image_size: int = 8, **kw) -> CLIP:
    tok = Tokenizer.train(captions, "word", max_length=8)
    text = TextEncoderConfig(vocab_size=tok.vocab_size, max_length=8, width=32, layers=1, heads=2)
    cfg = dict(widths=(8,), image_hidden=32, embed_dim=16, image_size=image_size, **kw)
    return CLIP(CLIPConfig(text=text, tokenizer=tok.config, **cfg))


def test_temperature_starts_at_0_07_and_is_clamped_at_100():
    torch.manual_seed(0)
    model = _tiny(["a red picture"])
    assert model.temperature == pytest.approx(0.07, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    assert float(model.scale().detach()) == pytest.approx(100.0)
    model.scale().backward()
    assert model.logit_scale.grad == 0  # clipped: no gradient drives it further
    with pytest.raises(GenlabError):
        CLIPConfig(init_temperature=0.001)  # 1/T = 1000 would start above the clamp


def test_encodings_are_unit_vectors_and_shapes_are_checked():
    torch.manual_seed(0)
    model = _tiny(["a red picture", "a blue picture"]).eval()
    img = model.encode_images(torch.rand(3, 3, 8, 8))
    txt = model.encode_text(["a red picture", "a blue thing never seen", "red"])
    assert img.shape == txt.shape == (3, 16)
    assert torch.allclose(img.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(txt.norm(dim=1), torch.ones(3), atol=1e-5)
    out = model(torch.rand(2, 3, 8, 8), *(lambda e: (e.ids, e.mask))(model.tokenizer.encode(["a", "b"])))
    assert out.logits_per_image.shape == (2, 2) and torch.allclose(
        out.logits_per_text, out.logits_per_image.T
    )
    with pytest.raises(GenlabError, match="shaped"):
        model.encode_images(torch.rand(2, 1, 8, 8))
    with pytest.raises(GenlabError):
        model.encode_text([])
    assert CLIP(CLIPConfig()).tokenizer.config.kind == "byte"  # the defaults fit together


def _colour_batch(names: list[str], generator: torch.Generator, size: int = 8) -> torch.Tensor:
    """One noisy flat image per colour name."""
    rgb = torch.tensor([COLORS[n] for n in names])[:, :, None, None]
    noise = 0.15 * torch.randn(len(names), 3, size, size, generator=generator)
    return (rgb + noise).clamp(0, 1)


def _train_toy(loss_fn, names: list[str], steps: int, seed: int = 0) -> CLIP:
    """Train a tiny CLIP on flat colour images captioned "a COLOUR picture", one of each per batch."""
    torch.manual_seed(seed)
    captions = [f"a {n} picture" for n in names]
    model = _tiny(captions)
    if loss_fn is matched_only_loss:
        model.logit_scale.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    encoded = model.tokenizer.encode(captions)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        out = model(_colour_batch(names, g), encoded.ids, encoded.mask)
        loss = loss_fn(out.image_embeds, out.text_embeds, out.logit_scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_zero_shot_picks_the_right_label_for_a_trained_toy_model():
    names = ["red", "green", "blue", "yellow"]
    model = _train_toy(clip_loss, names, steps=200)
    g = torch.Generator().manual_seed(123)  # fresh images, labels in another order than trained
    truth = ["blue", "red", "yellow", "green", "red", "blue", "green", "yellow"]
    labels = ["a yellow picture", "a blue picture", "a red picture", "a green picture"]
    probs = zero_shot_classify(model, _colour_batch(truth, g), labels)
    assert probs.shape == (8, 4) and torch.allclose(probs.sum(1), torch.ones(8))
    assert [labels[i].split()[1] for i in probs.argmax(1).tolist()] == truth
    assert probs.max(1).values.min() > 0.5
    ensembled = zero_shot_classify(model, _colour_batch(truth, g), labels, templates=("{}", "{} .", "{}"))
    assert [labels[i].split()[1] for i in ensembled.argmax(1).tolist()] == truth
    with pytest.raises(GenlabError):
        zero_shot_classify(model, _colour_batch(truth, g), [])
    with pytest.raises(GenlabError):
        zero_shot_classify(model, _colour_batch(truth, g), ["a red picture", " "])


def test_matched_pairs_only_collapse_while_contrastive_does_not():
    names = list(COLORS)
    g = torch.Generator().manual_seed(7)
    images = _colour_batch(names * 4, g)
    captions = [f"a {n} picture" for n in names]
    cosines = {}
    for name, loss_fn in (("matched", matched_only_loss), ("contrastive", clip_loss)):
        model = _train_toy(loss_fn, names, steps=150)
        with torch.no_grad():
            cosines[name] = (
                mean_pairwise_cosine(model.encode_images(images)),
                mean_pairwise_cosine(model.encode_text(captions)),
            )
    assert min(cosines["matched"]) > 0.95, cosines  # all embeddings alike
    assert max(cosines["contrastive"]) < 0.5, cosines  # spread apart by the negatives


def test_save_and_from_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    model = _tiny(["a red picture", "a blue picture"], mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1)).eval()
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
    model.save_pretrained(tmp_path / "run")
    loaded = CLIP.from_pretrained(tmp_path / "run")
    assert loaded.config == model.config and loaded.tokenizer.itos == model.tokenizer.itos
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(loaded.encode_images(x), model.encode_images(x))
        assert torch.allclose(loaded.encode_text(["a red picture"]), model.encode_text(["a red picture"]))
    assert float(loaded.scale()) == pytest.approx(math.exp(3.0))


def test_shapes_zero_shot_set_has_18_labels_matching_the_captions():
    from genlab.data import load_dataset
    from genlab.data.shapes_text import parse_caption

    data = load_dataset("shapes", "val")
    zs = zero_shot_set(data)
    assert len(zs.labels) == 18 and len(set(zs.labels)) == 18
    singles = [c for c, a in zip(data.captions, data.attributes, strict=True) if len(a["shapes"]) == 1]
    assert len(zs.images) == len(singles) > 0
    for caption, target in zip(singles, zs.targets.tolist(), strict=True):
        _, color, shape = zs.labels[target].split()
        assert {"color": color, "shape": shape}.items() <= parse_caption(caption).items()


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


FAST = [
    "--data",
    "digits",
    "--widths",
    "8",
    "--image-hidden",
    "16",
    "--embed-dim",
    "8",
    "--text-width",
    "16",
    "--text-layers",
    "1",
    "--text-heads",
    "2",
    "--batch-size",
    "16",
    "--no-progress",
]


def test_cli_train_clip_classify_and_resume(tmp_path):
    run = tmp_path / "run"
    result = invoke("train", "clip", *FAST, "--steps", "3", "--out", str(run))
    assert result.exit_code == 0, result.output
    assert "zero-shot accuracy" in result.output
    evals = [r for r in rundir.read_metrics(run) if r["event"] == "eval"]
    for key in ("val_i2t_top1", "val_t2i_top1", "image_cosine", "text_cosine", "zero_shot_acc", "val_loss"):
        assert key in evals[-1]
    assert list((run / "samples").glob("step_*.png"))
    result = invoke("train", "clip", *FAST, "--out", str(run), "--resume", "--steps", "5")
    assert result.exit_code == 0 and rundir.load_checkpoint(run)[1]["step"] == 5

    from genlab.data import load_dataset

    digits = load_dataset("digits", "val")
    png = save_grid(tmp_path / "d.png", digits.images[:1], nrow=1, scale=4)  # 32 px: resized back to 8
    result = invoke("clip", "classify", str(run), str(png), "--labels", "a handwritten 0, a handwritten 1")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(str(png)) and result.output.count("%") == 2
    for bad in ("", " , ", "a,,b", "a,a"):
        result = CliRunner().invoke(cli, ["clip", "classify", str(run), str(png), "--labels", bad])
        assert result.exit_code == 2 and "error: --labels" in result.output, bad
    result = CliRunner().invoke(cli, ["clip", "classify", str(tmp_path), str(png), "--labels", "a"])
    assert result.exit_code == 2 and "error:" in result.output


def test_cli_matched_loss_freezes_the_temperature_and_diffusion_reuses_the_text_tower(tmp_path):
    run = tmp_path / "run"
    result = invoke("train", "clip", *FAST, "--loss", "matched", "--steps", "3", "--out", str(run))
    assert result.exit_code == 0, result.output
    model = CLIP.from_pretrained(run)
    assert model.temperature == pytest.approx(0.07, rel=1e-5)
    assert rundir.read_config(run)["objective"]["loss"] == "matched"

    from genlab.data import DataConfig
    from genlab.diffusion.task import DiffusionConfig, DiffusionTask

    task = DiffusionTask(DataConfig("digits"), DiffusionConfig(cond="text"), text_encoder=f"clip:{run}")
    for key, value in model.text_encoder.state_dict().items():
        assert torch.equal(task.model.text_encoder.state_dict()[key], value)
