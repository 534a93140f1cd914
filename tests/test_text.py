"""Attention, tokenizers, the text encoder, and text-to-image diffusion end to end (tiny models)."""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner

from genlab.cli import cli
from genlab.data import DataConfig
from genlab.diffusion.guidance import CFGDenoiser
from genlab.diffusion.task import DiffusionConfig, DiffusionTask
from genlab.errors import GenlabError
from genlab.nn.attention import MultiHeadAttention, attention
from genlab.nn.text import BOS, EOS, PAD, UNK, TextEncoder, TextEncoderConfig, Tokenizer
from genlab.nn.text_unet import TextUNet
from genlab.nn.unet import UNet, UNetConfig
from genlab.pipelines import DiffusionPipeline, TextToImagePipeline
from genlab.train import TrainConfig, Trainer, seed_step

TINY_UNET = dict(base_channels=16, channel_mults=(1, 2), attention_levels=(1,), head_dim=16)
TINY_TEXT = dict(width=32, layers=1, heads=2)


def test_attention_equals_the_formula_with_and_without_a_mask():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))
    k, v = k[:, :, :4], v[:, :, :4]
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    fused, _ = attention(q, k, v, mask)
    explicit, weights = attention(q, k, v, mask, return_weights=True)
    by_hand = torch.empty_like(q)
    for n in range(2):
        keep = mask[n]
        scores = q[n] @ k[n][:, keep].transpose(-1, -2) / math.sqrt(8)
        by_hand[n] = scores.softmax(-1) @ v[n][:, keep]
    assert torch.allclose(fused, by_hand, atol=1e-5) and torch.allclose(explicit, by_hand, atol=1e-5)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3, 5)) and (weights[1, :, :, 2:] == 0).all()


def test_multi_head_attention_is_permutation_equivariant_without_positions():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4, context_dim=12)
    x, ctx = torch.randn(2, 7, 16), torch.randn(2, 5, 12)
    out = mha(x, ctx)
    perm_q, perm_k = torch.randperm(7), torch.randperm(5)
    assert torch.allclose(mha(x[:, perm_q], ctx), out[:, perm_q], atol=1e-5)  # queries: equivariant
    assert torch.allclose(mha(x, ctx[:, perm_k]), out, atol=1e-5)  # keys: invariant
    self_attn = MultiHeadAttention(16, 4)
    assert torch.allclose(self_attn(x[:, perm_q]), self_attn(x)[:, perm_q], atol=1e-5)


def test_word_tokenizer_round_trips_and_handles_empty_long_and_unknown_text():
    captions = ["a small red circle at the top left", "a blue square left of a green triangle"]
    tok = Tokenizer.train(captions, "word", max_length=12)
    for caption in captions:
        enc = tok.encode(caption)
        assert tok.decode(enc.ids[0]) == caption and not enc.truncated[0]
        assert enc.ids[0, 0] == BOS and enc.ids[0, enc.mask[0].sum() - 1] == EOS
    empty = tok.encode("")
    assert empty.ids[0, :3].tolist() == [BOS, EOS, PAD] and empty.mask[0].sum() == 2
    long = tok.encode("a red circle " * 20)
    assert long.truncated == [True] and long.mask[0].all() and long.ids[0, -1] == EOS
    unknown = tok.encode("Ein grüner Kreis, oben!")
    assert unknown.ids[0, 1:4].tolist() == [UNK, UNK, UNK] and tok.decode(unknown.ids[0]).startswith("[UNK]")
    with pytest.raises(GenlabError, match="must be text"):
        tok.encode([3])


def test_byte_tokenizer_round_trips_any_utf8():
    tok = Tokenizer.train([], "byte", max_length=64)
    for text in ["", "a red circle", "ein grüner Kreis", "赤い丸 🔴"]:
        enc = tok.encode(text)
        assert tok.decode(enc.ids[0]) == text and enc.mask[0].sum() == len(text.encode()) + 2
    assert tok.vocab_size == 260


def test_padding_does_not_change_the_text_encoding():
    torch.manual_seed(0)
    tok = Tokenizer.train(["a red circle", "a large blue square at the top left"], max_length=12)
    encoder = TextEncoder(TextEncoderConfig(vocab_size=tok.vocab_size, max_length=12, width=32, heads=2))
    both = tok.encode(["a red circle", "a large blue square at the top left"])
    alone = tok.encode("a red circle")
    states_b, pooled_b = encoder(both.ids, both.mask)
    states_a, pooled_a = encoder(alone.ids, alone.mask)
    real = alone.mask[0]
    assert torch.allclose(states_b[0, real], states_a[0, real], atol=1e-5)
    assert torch.allclose(pooled_b[0], pooled_a[0], atol=1e-5) and pooled_b.shape == (2, 32)


def test_unet_ignores_masked_context_tokens_and_needs_a_context():
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=3, image_size=8, context_dim=12, **TINY_UNET))
    for p in net.parameters():  # leave the zero-initialised state, so cross-attention acts
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([10.0, 500.0])
    ctx, mask = torch.randn(2, 5, 12), torch.tensor([[True] * 3 + [False] * 2] * 2)
    out = net(x, t, context=ctx, context_mask=mask)
    changed = ctx.clone()
    changed[:, 3:] = 100.0
    assert torch.allclose(net(x, t, context=changed, context_mask=mask), out, atol=1e-5)
    assert not torch.allclose(net(x, t, context=changed), out, atol=1e-3)  # unmasked, the tokens count
    with pytest.raises(GenlabError, match="needs the prompt"):
        net(x, t)


def test_guidance_at_scale_one_is_conditional_and_a_negative_prompt_replaces_the_unconditional():
    def denoiser(x, sigma, context):
        return x * context.mean(dim=(1, 2)).reshape(-1, 1, 1, 1) + sigma.reshape(-1, 1, 1, 1)

    x, sigma = torch.randn(3, 1, 4, 4), torch.tensor(2.0)
    cond, neg = {"context": torch.full((3, 2, 4), 2.0)}, {"context": torch.full((3, 2, 4), -1.0)}
    assert torch.equal(CFGDenoiser(denoiser, 1.0, cond, neg)(x, sigma), denoiser(x, sigma.expand(3), **cond))
    guided = CFGDenoiser(denoiser, 3.0, cond, neg)(x, sigma)
    d_c, d_n = denoiser(x, sigma.expand(3), **cond), denoiser(x, sigma.expand(3), **neg)
    assert torch.allclose(guided, d_n + 3.0 * (d_c - d_n))


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("t2i") / "shapes"
    seed_step(0, -1)
    task = DiffusionTask(
        DataConfig("shapes"),
        DiffusionConfig(cond="text", sample_steps=2),
        text_options=TINY_TEXT,
        **TINY_UNET,
    )
    cfg = TrainConfig(steps=4, batch_size=8, eval_every=0, sample_every=0, checkpoint_every=0, progress=False)
    Trainer(task, cfg, run).train()
    return run


def test_text_run_saves_reloads_and_resumes(text_run):
    from genlab import rundir

    config = rundir.read_config(text_run, kind="diffusion")
    assert config["diffusion"]["cond"] == "text" and config["model"]["text_source"] == "joint"
    model = TextUNet.from_pretrained(text_run)
    assert "circle" in model.config.tokenizer.vocab and model.config.unet.context_dim == 32
    task = DiffusionTask.from_run_config(config)
    assert isinstance(task.model, TextUNet) and task.model.config == model.config
    assert (text_run / "samples").is_dir()
    with pytest.raises(GenlabError, match="text-to-image run"):
        DiffusionPipeline.from_pretrained(text_run)


def test_pipeline_guidance_negative_prompts_and_attention_maps(text_run):
    # fp32: the recorded maps' explicit softmax is compared with the fused attention kernel's result
    pipe = TextToImagePipeline.from_pretrained(text_run, device="cpu", precision="fp32")

    def run(**kw):
        return pipe(
            "a small red circle at the top left",
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(0),
            num_images=2,
            **kw,
        )

    plain = run()
    assert plain.tensors.shape == (2, 3, 32, 32) and len(plain.images) == 2
    assert torch.equal(run(negative_prompt="").tensors, plain.tensors)  # the default negative is ""
    assert not torch.equal(run(negative_prompt="blue").tensors, plain.tensors)
    cond_only = run(guidance_scale=1.0)
    assert torch.equal(run(guidance_scale=1.0, negative_prompt="blue").tensors, cond_only.tensors)
    mapped = run(return_attention_maps=True)
    assert torch.allclose(mapped.tensors, plain.tensors, atol=1e-4)  # explicit softmax, same maths
    tokens = mapped.tokens[0]
    assert tokens[0] == "[BOS]" and tokens[-1] == "[EOS]" and "circle" in tokens
    assert mapped.attention_maps.shape[-2:] == (32, 32)
    # Softmax over the tokens at every pixel: the maps sum to one (bilinear upsampling keeps that).
    assert torch.allclose(mapped.attention_maps.sum(1), torch.ones(2, 32, 32), atol=1e-4)
    with pytest.raises(GenlabError, match="one negative prompt, or one per prompt"):
        pipe(["a", "b"], negative_prompt=["x", "y", "z"], num_inference_steps=1)
    with pytest.warns(UserWarning, match="cut to its first"):
        pipe("a red circle " * 20, num_inference_steps=1, num_images=1)


def test_cli_trains_and_samples_text_to_image(text_run, tmp_path):
    out = tmp_path / "run"
    args = [
        "train",
        "diffusion",
        "--data",
        "shapes",
        "--cond",
        "text",
        "--features",
        "none",
        "--eval-samples",
        "8",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--base-channels",
        "16",
        "--channel-mults",
        "1,2",
        "--attention-levels",
        "1",
        "--text-width",
        "32",
        "--text-layers",
        "1",
        "--text-heads",
        "2",
        "--no-progress",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "prompt adherence (all attributes right)" in result.output  # scored at the final evaluation
    grid, maps = tmp_path / "grid.png", tmp_path / "maps.png"
    result = CliRunner().invoke(
        cli,
        [
            "sample",
            str(text_run),
            "a red circle",
            "a blue square",
            "--n",
            "2",
            "--steps",
            "2",
            "--negative-prompt",
            "green",
            "--out",
            str(grid),
            "--attention-maps",
            str(maps),
        ],
    )
    assert result.exit_code == 0, result.output
    assert grid.is_file() and maps.is_file() and "4 images of 2 prompt(s)" in result.output
    for extra, message in [([], "give a prompt"), (["a circle", "--class", "1"], "give a prompt instead")]:
        bad = CliRunner().invoke(cli, ["sample", str(text_run), *extra, "--steps", "1"])
        assert bad.exit_code == 2 and message in bad.output
    bad = CliRunner().invoke(cli, [*args[:-1], str(tmp_path / "r2"), "--text-encoder", "bert"])
    assert bad.exit_code == 2 and "use 'joint' or 'clip:RUN'" in bad.output


def test_prompt_adherence_reads_real_shapes_right_and_random_pixels_wrong():
    from genlab.data import load_dataset
    from genlab.metrics.adherence import prompt_adherence, single_object_prompts

    data = load_dataset("shapes", "val")
    images, captions = data.images[:200], data.captions[:200]
    real = prompt_adherence(images, captions)
    assert real["all"] == 1.0 and real["checked"] == len(single_object_prompts(captions)) > 50
    assert real["checked"] + real["skipped"] == 200
    shuffled = prompt_adherence(images, captions[1:] + captions[:1])
    assert shuffled["all"] < 0.2  # another image's prompt is almost never right
    with pytest.raises(GenlabError, match="none was given"):
        prompt_adherence(images[:1], ["a blue square left of a green triangle"])


def test_eval_with_paraphrase_prompts_scores_the_same_scenes_in_held_out_phrasings(text_run, tmp_path):
    import json

    from genlab.data.shapes_text import HELD_OUT_WORDS, SINGLE_HELD_OUT_FORMS, parse_caption

    out = tmp_path / "p.json"
    args = ["eval", str(text_run), "--n", "8", "--steps", "1", "--metrics", "adherence", "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--prompts", "paraphrase"])
    assert result.exit_code == 0, result.output
    assert "the same scenes in held-out phrasings: all attributes right in" in result.output
    report = json.loads(out.read_text())
    assert len(report["prompts"]) == len(report["paraphrases"]) == 8
    for prompt, paraphrase in zip(report["prompts"], report["paraphrases"], strict=True):
        assert parse_caption(paraphrase) == parse_caption(prompt) and paraphrase != prompt
    held = report["adherence_paraphrase"]
    assert held["checked"] == 8 and held["all"] <= min(held["per_attribute"].values())
    assert (tmp_path / report["pictures"]["paraphrases"]).is_file()
    assert "held-out phrasings" in out.with_suffix(".html").read_text()
    words = {w for p in report["paraphrases"] for w in p.lower().replace(",", " ").split()}
    assert words & HELD_OUT_WORDS or any(":" in p for p in report["paraphrases"]), SINGLE_HELD_OUT_FORMS


def test_the_monitor_scores_held_out_phrasings_beside_the_prompts_when_asked(text_run):
    from genlab.evaluation.monitor import MonitorConfig
    from genlab.pipelines import TextToImagePipeline

    network = TextToImagePipeline.from_pretrained(text_run).network
    task = DiffusionTask(
        DataConfig("shapes"),
        DiffusionConfig(cond="text", sample_steps=1),
        model_config=network.config,
        monitor=MonitorConfig(samples=4, features="none", paraphrases=True),
    )
    scores = task.sample_quality(network)
    assert {"adherence", "paraphrase_adherence", "paraphrase_color", "paraphrase_count"} <= set(scores)
    assert 0 <= scores["paraphrase_adherence"] <= scores["paraphrase_color"] <= 1
    task.monitor = MonitorConfig(samples=4, features="none")
    assert "paraphrase_adherence" not in task.sample_quality(network)


def test_eval_of_a_text_run_reports_adherence_with_prompts_from_val_or_a_file(text_run, tmp_path):
    import json

    out = tmp_path / "e.json"
    args = ["eval", str(text_run), "--n", "6", "--steps", "1", "--metrics", "adherence,memorization"]
    result = CliRunner().invoke(cli, [*args, "--prompts", "single", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    adherence = report["adherence"]
    assert adherence["checked"] == 6 and 6 * adherence["all"] == pytest.approx(round(6 * adherence["all"]))
    assert adherence["all"] <= min(adherence["per_attribute"].values())  # all right implies each right
    assert len(report["prompts"]) == 6 and "prompt adherence" in out.with_suffix(".html").read_text()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a small red circle at the top left\n\na large blue square in the center\n")
    result = CliRunner().invoke(cli, [*args, "--prompts", str(prompts), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["prompts"][:3] == [
        "a small red circle at the top left",
        "a large blue square in the center",
        "a small red circle at the top left",
    ]
    for extra, message in [
        (["--prompts", str(tmp_path / "none.txt")], "neither 'val', 'single', 'paraphrase' nor a file"),
        (["--metrics", "clip"], "needs a CLIP run"),
    ]:
        bad = CliRunner().invoke(cli, [*args, *extra])  # the last --metrics counts
        assert bad.exit_code == 2 and message in bad.output, bad.output
