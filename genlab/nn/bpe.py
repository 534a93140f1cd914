"""CLIP's byte-level BPE tokenizer, read from a Stable Diffusion ``tokenizer/`` folder.

Byte-pair encoding (Sennrich et al. 2016) over the UTF-8 bytes of the text, as CLIP uses it (Radford et al.
2021, section 2.4): a vocabulary of 49,408 symbols, ``<|startoftext|>`` and ``<|endoftext|>`` around every
prompt, 77 positions. The ids are exactly those of the ``CLIPTokenizer`` that Stable Diffusion pipelines load
from the same folder (transformers 5.x, whose ``CLIPTokenizer`` is the one backed by the ``tokenizers``
library; there is no slow Python one any more), step by step:

1. **Special tokens** are cut out of the text first: those marked ``normalized: false`` in the raw text, the
   others (``normalized: true``) in the normalised text, each found leftmost-longest. Stable Diffusion 2.x
   pads with "!", a special token, so there every "!" of a prompt becomes the bare "!" symbol.
2. **Normalisation**: Unicode NFC, every run of white space (the Unicode ``White_Space`` characters) to one
   space, lower case character by character (so a final capital sigma becomes σ, not ς). Accents and control
   characters are kept, and CJK ideographs are not spaced out (the old slow tokenizer did both, through
   BERT's basic tokenizer, when ftfy was missing; the ids differ there).
3. **Pre-tokenisation**: the pieces that CLIP's pattern finds,
   ``<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+``,
   here a small scanner over ``unicodedata`` categories (genlab does not depend on ``regex``). A special
   token written in the text that step 1 did not take is split further into "<|", the word, "|>", as GPT-2's
   byte-level pattern does in ``tokenizers``.
4. **Bytes to symbols**: each UTF-8 byte becomes one printable character (GPT-2's ``bytes_to_unicode``), and
   the last symbol of a piece carries the end-of-word mark "</w>".
5. **Merges**: the adjacent pair of lowest rank in ``merges.txt`` merges first (the leftmost of equal
   ones), until no pair of the piece is a merge.
6. The prompt is cut to ``model_max_length - 2`` ids, framed by the start and end tokens and padded to
   ``model_max_length`` with the pad token; the attention mask is True on the framed ids.

A prompt of any length costs little: the scanner and the merges run lazily and stop once enough ids are
known. Pieces are independent, so stopping early changes nothing; inside a long piece, merging is split at
the places no merge can ever join (two bytes that are adjacent in no merged symbol), which are exact
boundaries too.
"""

from __future__ import annotations

import heapq
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import torch

from genlab.checks import MAX_TOKENS, MAX_VOCAB, check_range
from genlab.errors import GenlabError

END_OF_WORD = "</w>"
DEFAULT_MAX_LENGTH = 77  # CLIP's context, used when tokenizer_config.json does not say
SPECIAL_LITERALS = ("<|startoftext|>", "<|endoftext|>")  # matched as pieces by CLIP's pattern
CONTRACTIONS = ("s", "t", "re", "ve", "m", "ll", "d")  # after an apostrophe, in the pattern's order
# The token attributes of transformers' tokenizers, in the order it registers them as special tokens.
SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# Unicode's White_Space property (what ``\s`` matches in the Oniguruma patterns of ``tokenizers``); unlike
# Python's str.isspace it excludes the separators U+001C..U+001F.
WHITE_SPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
_WHITE_SPACE_RUN = re.compile("[" + re.escape("".join(sorted(WHITE_SPACE))) + "]+")
CACHE_SIZE = 20_000  # pieces whose merges are remembered
CACHE_MAX_CHARS = 64  # longer pieces are merged afresh each time
SPLIT_MIN_CHARS = 64  # longer pieces are first cut where no merge can join
MAX_FILE_BYTES = 64 * 2**20  # vocab.json and merges.txt of CLIP are 1.6 MB and 0.5 MB


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from the 256 byte values to printable characters: the printable Latin-1 bytes stand for
    themselves, the others (control characters, space, soft hyphen...) take the code points from 256 on, in
    order. BPE then works on strings without white space or control characters."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in keep}
    extra = (b for b in range(256) if b not in mapping)
    mapping.update({b: chr(256 + n) for n, b in enumerate(extra)})
    return dict(sorted(mapping.items()))


BYTE_SYMBOLS = bytes_to_unicode()
_BYTE_TABLE = [BYTE_SYMBOLS[b] for b in range(256)]


def normalize(text: str) -> str:
    """NFC, white-space runs to one space, lower case per character (``tokenizers``' Lowercase maps each
    character alone: Python's ``str.lower`` would turn a word-final capital sigma into ς)."""
    text = _WHITE_SPACE_RUN.sub(" ", unicodedata.normalize("NFC", text))
    return text.replace("\u03a3", "\u03c3").lower()


def _kind(ch: str) -> str:
    """'s' white space, 'L' letter (categories L*), 'N' number (N*), 'P' anything else."""
    if ch in WHITE_SPACE:
        return "s"
    if ch.isalpha():  # exactly the categories Lu, Ll, Lt, Lm, Lo
        return "L"
    return "N" if unicodedata.category(ch)[0] == "N" else "P"


def pre_tokenize(text: str) -> Iterator[str]:
    """The pieces of normalised ``text`` that CLIP's pattern matches, left to right (see the module
    docstring); white space separates pieces and belongs to none."""
    n, i = len(text), 0
    while i < n:
        ch = text[i]
        kind = _kind(ch)
        if kind == "s":
            i += 1
            continue
        if ch == "<":
            literal = next((s for s in SPECIAL_LITERALS if text.startswith(s, i)), None)
            if literal is not None:
                # GPT-2's byte-level pattern (which tokenizers' ByteLevel applies next) splits it again.
                yield "<|"
                yield literal[2:-2]
                yield "|>"
                i += len(literal)
                continue
        if ch == "'":
            ending = next((c for c in CONTRACTIONS if text.startswith(c, i + 1)), None)
            if ending is not None:
                yield text[i : i + 1 + len(ending)]
                i += 1 + len(ending)
                continue
        if kind == "N":  # one digit at a time
            yield ch
            i += 1
            continue
        j = _letters_end(text, i) if kind == "L" else i + 1
        while j < n and _kind(text[j]) == kind:  # the rest of a run of letters, or of other characters
            j += 1
        yield text[i:j]
        i = j


def _letters_end(text: str, i: int) -> int:
    """The end of the run of letters from ``i``, or near it: whole slices are tested with ``str.isalpha``,
    growing then halving (fast on a long run); the caller checks the last characters one by one."""
    step = 16
    while i + step <= len(text) and text[i : i + step].isalpha():
        i += step
        step *= 2
    while step > 1:
        step //= 2
        if i + step <= len(text) and text[i : i + step].isalpha():
            i += step
    return i


def byte_symbols(piece: str) -> list[str]:
    """The piece as one printable symbol per UTF-8 byte, the last one marked as the end of a word."""
    symbols = [_BYTE_TABLE[b] for b in piece.encode("utf-8")]
    symbols[-1] += END_OF_WORD
    return symbols


def merge(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply BPE merges to ``symbols``: repeatedly join the adjacent pair of lowest rank, the leftmost of
    equal ones (Sennrich et al. 2016, with the merges learned in order), until no pair is a merge.

    A heap of candidate pairs makes it O(n log n) in the symbols; an entry is stale when the pair at its
    position has changed since (its rank then differs: ranks are unique and a changed pair is longer)."""
    n = len(symbols)
    if n < 2:
        return symbols
    symbols = list(symbols)
    nxt = [*range(1, n), -1]
    prev = list(range(-1, n - 1))
    heap = [(r, i) for i in range(n - 1) if (r := ranks.get((symbols[i], symbols[i + 1]))) is not None]
    heapq.heapify(heap)
    while heap:
        rank, i = heapq.heappop(heap)
        j = nxt[i]
        if not symbols[i] or j < 0 or ranks.get((symbols[i], symbols[j])) != rank:
            continue
        symbols[i] += symbols[j]
        symbols[j] = ""
        nxt[i] = nxt[j]
        if nxt[j] >= 0:
            prev[nxt[j]] = i
        for left, right in ((prev[i], i), (i, nxt[i])):
            if left >= 0 and right >= 0 and (r := ranks.get((symbols[left], symbols[right]))) is not None:
                heapq.heappush(heap, (r, left))
    return [s for s in symbols if s]


@dataclass(frozen=True)
class SpecialToken:
    """A token cut out of the text before BPE: matched in the raw text, or in the normalised text when
    ``normalized``."""

    content: str
    normalized: bool


class Tokens(NamedTuple):
    ids: torch.Tensor  # (N, model_max_length) long
    mask: torch.Tensor  # (N, model_max_length) bool, True on the start token, the prompt and the end token


class CLIPTokenizer:
    """Text -> CLIP token ids: ``ids, mask = tokenizer(["a photo of a cat"])`` (see the module docstring).

    ``vocab`` maps symbols to ids, ``merges`` lists the merge pairs by rank; ``bos``, ``eos``, ``pad`` and
    ``unk`` are the contents of the special tokens, ``specials`` the tokens cut out of the text (in the order
    they were registered: for the same content, the last one decides). ``from_folder`` reads them all.
    """

    def __init__(
        self,
        vocab: dict[str, int],
        merges: list[tuple[str, str]],
        *,
        bos: str = "<|startoftext|>",
        eos: str = "<|endoftext|>",
        pad: str = "<|endoftext|>",
        unk: str = "<|endoftext|>",
        specials: tuple[SpecialToken, ...] | None = None,
        model_max_length: int = DEFAULT_MAX_LENGTH,
    ):
        check_range("model_max_length", model_max_length, 2, MAX_TOKENS)
        check_range("the size of `vocab`", len(vocab), 1, MAX_VOCAB)
        self.vocab = dict(vocab)
        self.model_max_length = model_max_length
        for name, token in (("bos", bos), ("eos", eos), ("pad", pad), ("unk", unk)):
            if token not in self.vocab:
                raise GenlabError(f"the `{name}` token {token!r} is not in the vocabulary")
        self.bos_id, self.eos_id = self.vocab[bos], self.vocab[eos]
        self.pad_id, self.unk_id = self.vocab[pad], self.vocab[unk]
        self.ranks: dict[tuple[str, str], int] = {}
        for rank, (a, b) in enumerate(merges):
            if a not in self.vocab or b not in self.vocab or a + b not in self.vocab:
                missing = next(s for s in (a, b, a + b) if s not in self.vocab)
                raise GenlabError(
                    f"merge {rank + 1} ({a} {b}) makes {missing!r}, which is not in the vocabulary"
                )
            self.ranks[(a, b)] = rank  # a pair listed twice keeps its last rank, as in tokenizers
        if specials is None:
            specials = tuple(SpecialToken(t, False) for t in dict.fromkeys((bos, eos, unk, pad)))
        flags = {t.content: t.normalized for t in specials if t.content}  # the last registration decides
        for content in flags:
            if content not in self.vocab:
                raise GenlabError(f"the special token {content!r} is not in the vocabulary")
        self.raw_specials = tuple(c for c, normalized in flags.items() if not normalized)
        self.normalized_specials = tuple(dict.fromkeys(normalize(c) for c, n in flags.items() if n and c))
        self._normalized_ids = {normalize(c): self.vocab[c] for c, n in flags.items() if n}
        # Two characters can end up in one symbol only if they are adjacent in some merged symbol.
        # (With and without the end-of-word mark read as characters: more pairs only cut less.)
        self._joinable: set[tuple[str, str]] = set()
        for a, b in self.ranks:
            for chars in (a + b, (a + b).removesuffix(END_OF_WORD)):
                self._joinable.update(zip(chars, chars[1:], strict=False))
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def from_folder(cls, path: str | Path) -> CLIPTokenizer:
        """The tokenizer of a diffusers ``tokenizer/`` folder: ``vocab.json``, ``merges.txt``, and
        ``tokenizer_config.json`` / ``special_tokens_map.json`` for the special tokens and the length.
        A folder that transformers 5 wrote holds ``tokenizer.json`` instead of the first two: its BPE
        model's vocabulary and merges are read from it."""
        path = Path(path)
        added = None  # the special tokens as tokenizer.json registers them, when it is what is read
        if not (path / "vocab.json").is_file() and (path / "tokenizer.json").is_file():
            vocab, merges, added = _read_tokenizer_json(path / "tokenizer.json")
        else:
            vocab, merges = _read_json(path / "vocab.json"), _read_merges(path / "merges.txt")
        if not isinstance(vocab, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_VOCAB
            for k, v in vocab.items()
        ):
            raise GenlabError(
                f"the vocabulary (vocab.json) in {path} must map symbols to ids (whole numbers)"
            )
        config = (
            _read_json(path / "tokenizer_config.json") if (path / "tokenizer_config.json").is_file() else {}
        )
        token_map = (
            _read_json(path / "special_tokens_map.json")
            if (path / "special_tokens_map.json").is_file()
            else {}
        )
        if not isinstance(config, dict) or not isinstance(token_map, dict):
            raise GenlabError(f"the tokenizer files in {path} must hold JSON objects")
        named, specials = _special_tokens(config, token_map)
        specials = added if added is not None else specials
        length = config.get("model_max_length", DEFAULT_MAX_LENGTH)
        if not isinstance(length, int) or isinstance(length, bool):
            raise GenlabError(
                f"`model_max_length` in {path / 'tokenizer_config.json'} must be a whole number"
            )
        return cls(vocab, merges, **named, specials=specials, model_max_length=length)

    # ------------------------------------------------------------------------------------------ encoding

    def __call__(self, texts: str | list[str]) -> Tokens:
        """Ids (N, model_max_length) and attention mask of ``texts``, framed, cut and padded as SD does."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = self.model_max_length
        ids = torch.full((len(texts), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(texts), length), dtype=torch.bool)
        for row, text in enumerate(texts):
            tokens, _ = self.encode(text)
            framed = [self.bos_id, *tokens, self.eos_id]
            ids[row, : len(framed)] = torch.tensor(framed)
            mask[row, : len(framed)] = True
        return Tokens(ids, mask)

    def encode(self, text: str) -> tuple[list[int], bool]:
        """The ids of ``text`` without the start and end tokens, cut to ``model_max_length - 2``, and whether
        it was cut."""
        if not isinstance(text, str):
            raise GenlabError(f"a prompt must be text, got {type(text).__name__}")
        keep = self.model_max_length - 2
        ids = list(islice(self.ids(text), keep + 1))
        return ids[:keep], len(ids) > keep

    def ids(self, text: str) -> Iterator[int]:
        """All the ids of ``text`` (no start or end token), lazily: stop reading when you have enough."""
        for raw, raw_id in _split(text, self.raw_specials):
            if raw_id is not None:
                yield self.vocab[raw_id]
                continue
            for part, special in _split(normalize(raw), self.normalized_specials):
                if special is not None:
                    yield self._normalized_ids[special]
                    continue
                for piece in pre_tokenize(part):
                    yield from self._piece_ids(piece)

    def _piece_ids(self, piece: str) -> Iterator[int]:
        symbols = byte_symbols(piece)
        if len(symbols) <= CACHE_MAX_CHARS:
            ids = self._cache.get(piece)
            if ids is None:
                ids = [self.vocab.get(s, self.unk_id) for s in merge(symbols, self.ranks)]
                if len(self._cache) >= CACHE_SIZE:
                    self._cache.clear()
                self._cache[piece] = ids
            yield from ids
            return
        for segment in self._segments(symbols):
            yield from (self.vocab.get(s, self.unk_id) for s in merge(segment, self.ranks))

    def _segments(self, symbols: list[str]) -> Iterator[list[str]]:
        """``symbols`` cut between two characters that no merged symbol holds side by side: no merge can
        ever join across such a cut, so merging the parts apart gives the same symbols."""
        start = 0
        for i in range(1, len(symbols)):
            if i - start >= SPLIT_MIN_CHARS and (symbols[i - 1], symbols[i][0]) not in self._joinable:
                yield symbols[start:i]
                start = i
        yield symbols[start:]


def _split(text: str, tokens: tuple[str, ...]) -> Iterator[tuple[str, str | None]]:
    """``text`` as (text, None) parts and (token, token) matches of ``tokens``, leftmost-longest (as the
    Aho-Corasick automaton of ``tokenizers``)."""
    if not tokens:
        yield text, None
        return
    start = 0
    found = {t: text.find(t) for t in tokens}
    while True:
        live = [(at, -len(t), t) for t, at in found.items() if at >= 0]
        if not live:
            break
        at, _, token = min(live)
        if at > start:
            yield text[start:at], None
        yield token, token
        start = at + len(token)
        for t, pos in found.items():
            if 0 <= pos < start:
                found[t] = text.find(t, start)
    if start < len(text):
        yield text[start:], None


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise GenlabError(f"{path} is missing; a CLIP tokenizer folder holds vocab.json and merges.txt")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise GenlabError(
            f"{path} is larger than {MAX_FILE_BYTES // 2**20} MB; it is not a CLIP tokenizer file"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise GenlabError(f"{path} is not valid JSON ({e})") from None


def _read_tokenizer_json(path: Path) -> tuple[Any, list[tuple[str, str]], tuple[SpecialToken, ...]]:
    """(vocab, merges, special tokens) of the BPE model in a ``tokenizer.json`` (the tokenizers library's
    file), whose merges are "a b" strings or [a, b] pairs and whose ``added_tokens`` say how each special
    token is matched."""
    data = _read_json(path)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        raise GenlabError(f"{path} does not hold a BPE tokenizer model; it is not a CLIP tokenizer")
    merges = []
    for number, merge_ in enumerate(model.get("merges") or [], 1):
        pair = merge_.split(" ") if isinstance(merge_, str) else merge_
        if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(p, str) for p in pair):
            raise GenlabError(f"{path}: merge {number} is not two symbols: {str(merge_)[:40]!r}")
        merges.append((pair[0], pair[1]))
    added = []
    for token in data.get("added_tokens") or []:
        if not isinstance(token, dict) or not isinstance(token.get("content"), str):
            raise GenlabError(f"{path}: an added token is not an object with a content")
        added.append(_as_token(token, special_default=True))
    specials = tuple(SpecialToken(content, normalized) for content, normalized, _ in added)
    return model.get("vocab"), merges, specials


def _read_merges(path: Path) -> list[tuple[str, str]]:
    """merges.txt as tokenizers reads it: a "#version" line is skipped, every other line is two symbols
    separated by one space."""
    if not path.is_file():
        raise GenlabError(f"{path} is missing; a CLIP tokenizer folder holds vocab.json and merges.txt")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise GenlabError(
            f"{path} is larger than {MAX_FILE_BYTES // 2**20} MB; it is not a CLIP tokenizer file"
        )
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    merges = []
    for number, line in enumerate(lines, 1):
        line = line.removesuffix("\r")
        if line.startswith("#version"):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise GenlabError(f"{path} line {number} is not two symbols separated by a space: {line[:40]!r}")
        merges.append((parts[0], parts[1]))
    return merges


def _special_tokens(config: dict, token_map: dict) -> tuple[dict[str, str], tuple[SpecialToken, ...]]:
    """The contents of bos/eos/pad/unk and the special tokens to cut out of the text, resolved as
    transformers 5 does from ``tokenizer_config.json`` and ``special_tokens_map.json``.

    With an ``added_tokens_decoder`` in the config, its tokens come first and the map file is ignored;
    otherwise each entry of the map file replaces the config's. A plain string is matched in the raw text
    (``normalized: false``); an object says. transformers registers the tokens in ``SPECIAL_NAMES`` order,
    skipping exact repeats, and the last registration of a content decides how it is matched.
    """
    decoder = config.get("added_tokens_decoder")
    values: dict[str, Any] = {}
    registered: list[Any] = []
    for source in (config, token_map):
        for key in ("additional_special_tokens", "extra_special_tokens"):
            if source.get(key):
                raise GenlabError(f"the tokenizer lists `{key}`, which genlab does not support")
    from_map = set()
    if isinstance(decoder, dict):
        for _, token in sorted(decoder.items(), key=lambda kv: int(kv[0])):
            registered.append(_as_token(token, special_default=False))
    else:
        values.update(
            {k: v for k, v in token_map.items() if k.endswith("_token") and isinstance(v, (str, dict))}
        )
        from_map = set(values)
    for key, value in config.items():
        if key.endswith("_token") and isinstance(value, (str, dict)) and key not in values:
            values[key] = value
    values.setdefault("bos_token", "<|startoftext|>")  # CLIPTokenizer's defaults
    for key in ("eos_token", "unk_token", "pad_token"):
        values.setdefault(key, "<|endoftext|>")
    extras = [k for k in values if k not in SPECIAL_NAMES]
    decoder_contents = {t[0] for t in registered}
    for key in (*SPECIAL_NAMES, *extras):
        if key not in values:
            continue
        value = values[key]
        token = value if isinstance(value, str) else _as_token(value, special_default=key in from_map)
        content = token if isinstance(token, str) else token[0]
        if content in decoder_contents or token in registered:
            continue
        registered.append(token)
    named = {}
    for key in ("bos", "eos", "pad", "unk"):
        value = values[f"{key}_token"]
        named[key] = value if isinstance(value, str) else _as_token(value, False)[0]
    specials = tuple(
        SpecialToken(t, False) if isinstance(t, str) else SpecialToken(t[0], t[1]) for t in registered
    )
    return named, specials


def _as_token(value: Any, special_default: bool) -> tuple[str, bool, bool]:
    """(content, normalized, special) of a token object of the tokenizer files; its options other than
    ``normalized`` must be off (no Stable Diffusion tokenizer sets them; genlab does not implement them)."""
    if not isinstance(value, dict) or not isinstance(value.get("content"), str):
        raise GenlabError(
            f"a special token must be a string or an object with a `content`, got {value!r:.60}"
        )
    for option in ("lstrip", "rstrip", "single_word"):
        if value.get(option):
            raise GenlabError(
                f"the special token {value['content']!r} sets `{option}`, which genlab does not support"
            )
    special = bool(value.get("special", special_default))
    return value["content"], bool(value.get("normalized", not special)), special
