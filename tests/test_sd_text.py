"""Stable Diffusion's text side against transformers: the CLIP BPE tokenizer (genlab.nn.bpe) and the CLIP
text transformer (genlab.nn.clip_text).

The tokenizer files are made here: a BPE learned from a small English corpus (plus a little French,
Japanese and emoji), over the 256 byte symbols and their end-of-word forms, as CLIP's were (only smaller).
Both tokenizers then read the same folder, written the way Stable Diffusion 1.x (pad with <|endoftext|>)
and 2.x (pad with "!") write theirs.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
import torch
from sd_fixtures import CORPUS, learn_bpe, token, write_tokenizer

from genlab.errors import GenlabError
from genlab.nn.bpe import CLIPTokenizer, merge

transformers = pytest.importorskip("transformers")

PROMPTS_FIXED = [
    "",
    " ",
    "a photo of a cat",
    "A Photo Of A CAT",
    "it's can't won't they're we've I'm you'll he'd 'S 'T",
    "multiple    spaces\tand\ttabs\nand\nnewlines\r\n here",
    "control\x00chars\x07and\x1b[0m escape\x7f\x85 and \u200b zero width \ufeff bom \ufffd",
    "Unicode: café naïve Ærøskøbing Straße İstanbul ΣΑΣ ΟΔΥΣΣΕΥΣ ǅ ﬁ ﬀ",
    "decomposed: cafe\u0301 n\u0303 a\u030a\u0301",
    "日本語のテキスト 中文字符 한국어 텍스트 ไทย العربية עברית हिन्दी",
    "emoji 🐱🚀✨ 👩‍👩‍👧 🇫🇷 ❤️ 👍🏽",
    "digits 12345 3.14159 1,000,000 ½ ¼ ² ³ ⅷ ٣ ๕ ① 10⁹",
    "punctuation!!! ??? ... --- (brackets) [more] {braces} <angle> \"quotes\" 'single' «guillemets» — –",
    "<|startoftext|>a<|endoftext|>b <|endoftext|><|startoftext|>",
    "<|StartOfText|> and <|ENDOFTEXT|> written in capitals, <|endoftext| broken, |endoftext|>",
    "!<|endoftext|>!'s <<|endoftext|>> '<|startoftext|>'",
    "wow!!!! hey! !! a!b !!!",
    "\u2028line separator\u2029paragraph\u3000ideographic space\u00a0nbsp\u1680ogham\u001cfile sep\u001fend",
    "x" * 300,
    "a " * 100,
    "supercalifragilisticexpialidocious " * 10,
    "8k uhd, hdr, 4k, 1080p, f/1.8, 35mm, iso 100",
    "'''quoted''' ''s 's 'sun 'llama 're're",
    "ab" * 50 + " " + "ba" * 50,
    "👍" * 100,
    "Ⅻ ⅻ ⓐ Ⓐ ＡＢＣ ａｂｃ １２３",
]
FRAGMENTS = [
    "a",
    "photo",
    "of",
    "the",
    "cat",
    "dog's",
    "CAN'T",
    "!!",
    "?",
    "...",
    "café",
    "naïve",
    "東京",
    "中文",
    "🐱",
    "🚀",
    "✨",
    "½",
    "²",
    "42",
    "3.5",
    "8k",
    "\t",
    "\n",
    "  ",
    "\x00",
    "\x1b",
    "<|endoftext|>",
    "<|startoftext|>",
    "<|EndOfText|>",
    "Σ",
    "İ",
    "ß",
    "ﬁ",
    "e\u0301",
    "(",
    ")",
    "--",
    "—",
    "'s",
    "'",
    '"',
    "mountains",
    "horse",
    "ASTRONAUT",
    "Straße",
    "x" * 40,
    "😀😃😄",
    "٣",
    "①",
    "|",
    "<",
    ">",
    "</w>",
]


def prompts(count: int = 200) -> list[str]:
    rng = random.Random(0)
    out = list(PROMPTS_FIXED)
    while len(out) < count:
        words = rng.choices(FRAGMENTS, k=rng.randint(1, 40))
        out.append("".join(w + rng.choice(["", " ", " ", "  ", ", "]) for w in words))
    return out


@pytest.fixture(scope="module")
def merges() -> list[tuple[str, str]]:
    return learn_bpe(CORPUS, 400)


def reference_ids(folder: Path, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """What Stable Diffusion pipelines do: padding="max_length", max_length=model_max_length, truncation."""
    reference = transformers.CLIPTokenizer.from_pretrained(folder)
    out = reference(
        texts,
        padding="max_length",
        max_length=reference.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    return out.input_ids, out.attention_mask


def assert_same_ids(folder: Path, texts: list[str]) -> None:
    ids, mask = CLIPTokenizer.from_folder(folder)(texts)
    want_ids, want_mask = reference_ids(folder, texts)
    for row, text in enumerate(texts):
        assert ids[row].tolist() == want_ids[row].tolist(), f"prompt {row}: {text!r}"
        assert mask[row].tolist() == want_mask[row].bool().tolist(), f"prompt {row}: {text!r}"


@pytest.mark.parametrize("pad", ["<|endoftext|>", "!"], ids=["sd1", "sd2"])
def test_tokenizer_matches_transformers(tmp_path, merges, pad):
    assert_same_ids(write_tokenizer(tmp_path, merges, pad), prompts())


def test_the_learned_vocabulary_merges_whole_words(tmp_path, merges):
    """The corpus' words come out as single symbols, so the comparisons above exercise real merges."""
    tokenizer = CLIPTokenizer.from_folder(write_tokenizer(tmp_path, merges, "<|endoftext|>"))
    assert len(tokenizer.encode("a painting of the city in the mountains")[0]) == 8
    assert len(tokenizer.encode("a zqxv")[0]) == 5


# How transformers 5 resolves the special tokens from the two JSON files (see genlab.nn.bpe._special_tokens):
# plain strings, objects with and without "normalized", an added_tokens_decoder, files missing.
SPECIAL_VARIANTS = {
    "strings": {
        "tokenizer_config.json": {
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "model_max_length": 77,
        },
        "special_tokens_map.json": None,
    },
    "unk_normalized_last": {
        "tokenizer_config.json": {
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": token("<|endoftext|>", typed=True),
            "model_max_length": 77,
        },
        "special_tokens_map.json": None,
    },
    "map_only": {
        "tokenizer_config.json": {"model_max_length": 77},
        "special_tokens_map.json": {
            "bos_token": token("<|startoftext|>", normalized=False),
            "eos_token": token("<|endoftext|>"),
            "pad_token": "!",
        },
    },
    "added_tokens_decoder": {
        "tokenizer_config.json": {
            "added_tokens_decoder": {
                "0": {**token("!", normalized=True), "special": True},
                "1000000": {**token("<|endoftext|>", normalized=False), "special": True},
            },
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "pad_token": "!",
            "model_max_length": 77,
        },
    },
    "pad_is_bos_typed_map": {
        "tokenizer_config.json": {"model_max_length": 20, "pad_token": token("!")},
        "special_tokens_map.json": {"pad_token": "<|startoftext|>"},
    },
    "pad_object_normalized": {
        "tokenizer_config.json": {"model_max_length": 77, "pad_token": token("!", typed=True)},
        "special_tokens_map.json": None,
    },
}


@pytest.mark.parametrize("variant", sorted(SPECIAL_VARIANTS))
def test_special_tokens_resolve_as_transformers(tmp_path, merges, variant):
    files = dict(SPECIAL_VARIANTS[variant])
    decoder = files["tokenizer_config.json"].get("added_tokens_decoder")
    if decoder:  # the id of "<|endoftext|>" is only known once the vocabulary is written
        write_tokenizer(tmp_path, merges, "!")
        vocab = json.loads((tmp_path / "vocab.json").read_text())
        decoder[str(vocab["<|endoftext|>"])] = decoder.pop("1000000")
    folder = write_tokenizer(tmp_path, merges, "!", **files)
    texts = [p for p in prompts(80) if "<|" in p.lower() or "!" in p][:30] + [PROMPTS_FIXED[14], "x" * 30]
    assert_same_ids(folder, texts)


def test_tokenizer_checks_its_files(tmp_path, merges):
    folder = write_tokenizer(tmp_path, merges, "<|endoftext|>")
    (folder / "merges.txt").write_text("#version: 0.2\na b c\n", encoding="utf-8")
    with pytest.raises(GenlabError, match="line 2"):
        CLIPTokenizer.from_folder(folder)
    (folder / "merges.txt").write_text("#version: 0.2\nq zz\n", encoding="utf-8")
    with pytest.raises(GenlabError, match="not in the vocabulary"):
        CLIPTokenizer.from_folder(folder)
    (folder / "merges.txt").unlink()
    with pytest.raises(GenlabError, match="missing"):
        CLIPTokenizer.from_folder(folder)
    folder = write_tokenizer(tmp_path / "b", merges, "<|endoftext|>")
    (folder / "vocab.json").write_text('{"a": "zero"}', encoding="utf-8")
    with pytest.raises(GenlabError, match="vocab.json"):
        CLIPTokenizer.from_folder(folder)
    folder = write_tokenizer(tmp_path / "c", merges, "<|padding|>")
    with pytest.raises(GenlabError, match="pad"):
        CLIPTokenizer.from_folder(folder)


def test_a_long_prompt_is_cut_quickly_and_exactly(tmp_path, merges):
    """A million characters take seconds at most, not minutes (0.3 s for words or one long letter run,
    1.4 s for a million "!", on a loaded core), and the first 75 ids are those of the whole text. A word
    that no merge can cut ("abab...", where ab and ba are both merges) is merged whole: O(n log n), 2.8 s
    for these 200,000 characters."""
    tokenizer = CLIPTokenizer.from_folder(write_tokenizer(tmp_path, merges, "<|endoftext|>"))
    texts = ("a photo of a horse " * 60_000, "horse" * 200_000, "x" * 10**6, "!" * 10**6, "ab" * 100_000)
    for text in texts:
        start = time.perf_counter()
        ids, truncated = tokenizer.encode(text)
        assert time.perf_counter() - start < 30
        assert truncated and len(ids) == 75
    assert_same_ids(tmp_path, [text[:2000] for text in texts])


def test_merge_takes_the_lowest_rank_leftmost_first():
    ranks = {("c", "d"): 0, ("b", "c"): 1, ("a", "b"): 2, ("a", "a"): 3}
    assert merge(list("abcd"), ranks) == ["ab", "cd"]  # cd first blocks bc, then ab
    assert merge(list("abc"), ranks) == ["a", "bc"]
    assert merge(list("aaaaa"), ranks) == ["aa", "aa", "a"]


# ------------------------------------------------------------------------------------------ text encoder

# transformers' CLIPTextConfig of SD 1.5 (OpenAI CLIP ViT-L/14) and SD 2.1 (OpenCLIP ViT-H/14) field for
# field, only narrower and shallower; SD 2.1 keeps 23 of 24 layers: here one fewer than SD 1.x's tiny copy.
SD1_TEXT = dict(
    vocab_size=1000,
    hidden_size=32,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=16,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)
SD2_TEXT = {
    **SD1_TEXT,
    "hidden_act": "gelu",
    "num_hidden_layers": 2,
    "hidden_size": 24,
    "num_attention_heads": 3,
}
SD2_TEXT.update(intermediate_size=96, projection_dim=12)


def reference_text_model(folder: Path, settings: dict, dtype: torch.dtype = torch.float32):
    from transformers import CLIPTextConfig as ReferenceConfig
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    model = CLIPTextModel(ReferenceConfig(**settings)).eval()
    with torch.no_grad():  # LayerNorms away from 1 and 0, so that a missing or swapped one shows
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    model.to(dtype).save_pretrained(folder)
    return model


def genlab_text_model(folder: Path):
    from safetensors.torch import load_file

    from genlab.nn.clip_text import CLIPTextConfig, CLIPTextTransformer

    config = CLIPTextConfig.from_transformers(json.loads((folder / "config.json").read_text()))
    model = CLIPTextTransformer(config).eval()
    state = {k: v.float() for k, v in load_file(folder / "model.safetensors").items()}  # fp16 upcast
    model.load_state_dict(state, strict=True)
    return model


def sample_ids(vocab: int, eos: int) -> torch.Tensor:
    """Three prompts of 5, 40 and 77 ids, the last being the end token ``eos`` repeated as SD 1.x pads."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab - 1, (3, 77), generator=g)
    for row, length in enumerate((5, 40, 77)):
        ids[row, length - 1 :] = eos
    return ids


@pytest.mark.parametrize("settings", [SD1_TEXT, SD2_TEXT], ids=["sd1", "sd2"])
def test_text_model_matches_transformers(tmp_path, settings):
    reference = reference_text_model(tmp_path, settings)
    model = genlab_text_model(tmp_path)
    ids = sample_ids(settings["vocab_size"], settings["vocab_size"] - 1)
    with torch.no_grad():
        want = reference(ids, output_hidden_states=True)
        states = model(ids)
        torch.testing.assert_close(states, want.last_hidden_state, atol=1e-4, rtol=0)
        torch.testing.assert_close(model.pool(states, ids), want.pooler_output, atol=1e-4, rtol=0)
        # clip skip 1, as diffusers does it: the states before the last block, through the final LayerNorm
        skipped = reference.final_layer_norm(want.hidden_states[-2])
        torch.testing.assert_close(model(ids, clip_skip=1), skipped, atol=1e-4, rtol=0)


def test_text_model_pools_at_the_end_token_of_new_configs(tmp_path):
    settings = {**SD1_TEXT, "eos_token_id": 999, "bos_token_id": 998}
    reference = reference_text_model(tmp_path, settings)
    model = genlab_text_model(tmp_path)
    ids = sample_ids(1000, 999)
    ids[0, 10] = 999  # pooled at the first end token, not the largest id
    with torch.no_grad():
        want = reference(ids).pooler_output
        torch.testing.assert_close(model.pool(model(ids), ids), want, atol=1e-4, rtol=0)


def test_text_model_loads_fp16_weights_upcast(tmp_path):
    reference_text_model(tmp_path, SD1_TEXT, dtype=torch.float16)
    from transformers import CLIPTextModel

    upcast = CLIPTextModel.from_pretrained(tmp_path, dtype=torch.float32).eval()
    model = genlab_text_model(tmp_path)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ids = sample_ids(1000, 999)
    with torch.no_grad():
        torch.testing.assert_close(model(ids), upcast(ids).last_hidden_state, atol=1e-4, rtol=0)


def test_text_model_loads_the_layouts_sd_folders_hold(tmp_path):
    """SD folders were written by transformers 4 (keys under text_model., often with position_ids); the
    module's own keys are those, and transformers 5's (no text_model.) load too."""
    from safetensors.torch import load_file

    from genlab.nn.clip_text import CLIPTextConfig, CLIPTextTransformer, checkpoint_state

    reference_text_model(tmp_path, SD1_TEXT)
    saved = load_file(tmp_path / "model.safetensors")
    model = CLIPTextTransformer(CLIPTextConfig.from_transformers(SD1_TEXT))
    old = {"text_model." + k: v for k, v in saved.items()}
    assert set(model.state_dict()) == set(old)
    old["text_model.embeddings.position_ids"] = torch.arange(77)[None].float() * 0.999  # damaged, ignored
    for state in (saved, old):
        model.load_state_dict(state, strict=True)
        assert set(checkpoint_state(state)) == set(model.state_dict())
    assert torch.equal(model.text_model.embeddings.position_ids, torch.arange(77)[None])
    with pytest.raises(RuntimeError, match="Missing"):
        model.load_state_dict({k: v for k, v in old.items() if "final_layer_norm" not in k}, strict=True)


def test_text_config_reads_sd_configs_and_refuses_others():
    from genlab.nn.clip_text import CLIPTextConfig

    config = CLIPTextConfig.from_transformers(
        {**SD1_TEXT, "architectures": ["CLIPTextModel"], "torch_dtype": "float16", "dropout": 0.0}
    )
    assert (config.hidden_size, config.num_hidden_layers, config.eos_token_id) == (32, 3, 2)
    for bad, message in (
        ({"hidden_act": "relu"}, "`hidden_act`"),
        ({"num_attention_heads": 5}, "`num_attention_heads`"),
        ({"hidden_size": 10**9}, "`hidden_size`"),
        ({"num_hidden_layers": "12"}, "`num_hidden_layers`"),
        ({"model_type": "clip"}, "`model_type`"),
    ):
        with pytest.raises(GenlabError, match=message):
            CLIPTextConfig.from_transformers({**SD1_TEXT, **bad})
    with pytest.raises(GenlabError, match="billion parameters"):
        from genlab.nn.clip_text import CLIPTextTransformer

        CLIPTextTransformer(CLIPTextConfig(vocab_size=900_000, hidden_size=60_000, num_attention_heads=1))


@pytest.mark.parametrize("pad", ["<|endoftext|>", "!"], ids=["sd1", "sd2"])
def test_a_folder_transformers_5_saved_reads_its_tokenizer_json(tmp_path, merges, pad):
    """transformers 5's save_pretrained writes tokenizer.json without vocab.json and merges.txt."""
    saved = tmp_path / "saved"
    transformers.CLIPTokenizer.from_pretrained(
        write_tokenizer(tmp_path / "original", merges, pad)
    ).save_pretrained(saved)
    if (saved / "vocab.json").is_file():
        pytest.skip("this transformers still writes vocab.json")
    assert_same_ids(saved, prompts())
