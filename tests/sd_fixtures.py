"""A tiny Stable Diffusion checkpoint for tests, written by diffusers and transformers as a real one is.

The tokenizer's vocabulary is a BPE learned here from a small corpus over the 256 byte symbols and their
end-of-word forms, as CLIP's was (only smaller); the networks mirror SD 1.5 and SD 2.1 field for field
with their widths and depths shrunk. ``write_checkpoint`` saves the whole pipeline with
``save_pretrained`` (safetensors), so genlab reads exactly the files a downloaded model has.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

CORPUS = """
a photograph of an astronaut riding a horse on the moon, highly detailed, 8k, trending on artstation.
a painting of a fox sitting in a field at sunrise, in the style of claude monet; oil on canvas.
portrait of a beautiful woman with long red hair, studio lighting, sharp focus, by greg rutkowski.
a cute cat wearing a tiny hat, digital art. it's a sunny day and the dog can't stop running!
the quick brown fox jumps over the lazy dog. they're sure we've seen what you'll do, i'd say i'm done.
an old castle on a hill above the sea, dramatic clouds, cinematic, matte painting, unreal engine 5.
a bowl of fruit on a wooden table: apples, oranges, bananas and grapes. still life photography.
a futuristic city at night with neon lights and flying cars, cyberpunk, blade runner, rain, reflections.
un café au lait à paris, très élégant; la naïveté du garçon. 日本の東京の夜景。 🐱🚀✨ mountains and rivers.
watercolor illustration of a small village in the mountains in winter, snow, warm lights in the windows.
"""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte symbols, written again here so that the vocabulary does not depend on genlab."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = {b: chr(b) for b in keep}
    symbols.update({b: chr(256 + n) for n, b in enumerate(b for b in range(256) if b not in symbols)})
    return dict(sorted(symbols.items()))


def learn_bpe(corpus: str, merges: int) -> list[tuple[str, str]]:
    """The classic BPE trainer (Sennrich et al. 2016, Algorithm 1): count adjacent symbol pairs over the
    words, merge the most frequent, repeat. Words are lower-cased letter runs, digits and punctuation runs,
    spelled in byte symbols with "</w>" on the last one."""
    table = bytes_to_unicode()
    words: Counter[tuple[str, ...]] = Counter()
    token = ""
    for ch in corpus.lower() + " ":  # letters together, every other non-space character alone
        if ch.isalpha():
            token += ch
            continue
        for word in (token, "" if ch.isspace() else ch):
            if word:
                symbols = [table[b] for b in word.encode()]
                symbols[-1] += "</w>"
                words[tuple(symbols)] += 1
        token = ""
    learned = []
    for _ in range(merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:], strict=False):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        learned.append(best)
        merged: Counter[tuple[str, ...]] = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return learned


def token(content: str, normalized: bool = True, typed: bool = False) -> dict:
    entry = {
        "content": content,
        "lstrip": False,
        "normalized": normalized,
        "rstrip": False,
        "single_word": False,
    }
    return {"__type": "AddedToken", **entry} if typed else entry


def write_tokenizer(folder: Path, merges: list[tuple[str, str]], pad: str, **overrides) -> Path:
    """A tokenizer folder as Stable Diffusion ships it: vocab.json (bytes, bytes</w>, merges, specials),
    merges.txt, and the two JSON files of the special tokens. ``overrides`` replace whole files' contents."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    vocab = [*symbols, *(s + "</w>" for s in symbols), *(a + b for a, b in merges)]
    vocab = list(dict.fromkeys(vocab)) + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(vocab)}), encoding="utf-8")
    text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    (folder / "merges.txt").write_text(text, encoding="utf-8")
    config = {
        "add_prefix_space": False,
        "bos_token": token("<|startoftext|>", typed=True),
        "do_lower_case": True,
        "eos_token": token("<|endoftext|>", typed=True),
        "errors": "replace",
        "model_max_length": 77,
        "pad_token": pad,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": token("<|endoftext|>", typed=True),
    }
    special_map = {
        "bos_token": token("<|startoftext|>"),
        "eos_token": token("<|endoftext|>"),
        "pad_token": pad,
        "unk_token": token("<|endoftext|>"),
    }
    files = {"tokenizer_config.json": config, "special_tokens_map.json": special_map}
    files.update(overrides)
    for name, content in files.items():
        if content is None:
            (folder / name).unlink(missing_ok=True)
        else:
            (folder / name).write_text(json.dumps(content), encoding="utf-8")
    return folder


# The SD 1.5 / SD 2.1 U-Net fields with widths shrunk (320/640/1280/1280 -> 8/16/32/32, 32 groups -> 4,
# 768/1024 text widths -> 12/16); SD 2.1 has per-block heads, linear projections, upcast attention and a
# v-prediction, "leading"-spaced scheduler
SD15_UNET = {
    "sample_size": 8,
    "block_out_channels": [8, 16, 32, 32],
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "cross_attention_dim": 12,
    "attention_head_dim": 2,
}
UNET = {
    "sd15": SD15_UNET,
    "sd21": SD15_UNET
    | {
        "cross_attention_dim": 16,
        "attention_head_dim": [1, 2, 4, 4],
        "use_linear_projection": True,
        "upcast_attention": True,
    },
}
TEXT = {
    "sd15": {"hidden_size": 12, "num_attention_heads": 2, "num_hidden_layers": 2, "hidden_act": "quick_gelu"},
    "sd21": {"hidden_size": 16, "num_attention_heads": 2, "num_hidden_layers": 2, "hidden_act": "gelu"},
}
SCHEDULER = {
    "sd15": {"prediction_type": "epsilon", "steps_offset": 1, "timestep_spacing": "leading"},
    "sd21": {"prediction_type": "v_prediction", "steps_offset": 1, "timestep_spacing": "leading"},
}
PAD = {"sd15": "<|endoftext|>", "sd21": "!"}


def write_checkpoint(folder: Path, variant: str = "sd15", seed: int = 0) -> Path:
    """A tiny Stable Diffusion ``variant`` ("sd15" or "sd21") with random weights, saved by diffusers'
    ``StableDiffusionPipeline.save_pretrained`` into ``folder`` (64 x 64 images, 8 x 8 latents)."""
    import diffusers
    import torch
    import transformers

    torch.manual_seed(seed)
    tokenizer_dir = write_tokenizer(
        folder.parent / f"{folder.name}-tokenizer", learn_bpe(CORPUS, 300), PAD[variant]
    )
    tokenizer = transformers.CLIPTokenizer.from_pretrained(tokenizer_dir)
    vocab = len(json.loads((tokenizer_dir / "vocab.json").read_text(encoding="utf-8")))
    text = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            vocab_size=vocab,
            intermediate_size=2 * TEXT[variant]["hidden_size"],
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **TEXT[variant],
        )
    )
    unet = diffusers.UNet2DConditionModel(**UNET[variant])
    vae = diffusers.AutoencoderKL(
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[8, 8, 16, 16],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    )
    scheduler = diffusers.PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        **SCHEDULER[variant],
    )
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    # transformers 5 writes the tokenizer as tokenizer.json alone; the checkpoints on the Hub (and so in
    # users' folders) carry the original files, which are what genlab reads
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / "tokenizer" / name).write_bytes((tokenizer_dir / name).read_bytes())
    return folder
