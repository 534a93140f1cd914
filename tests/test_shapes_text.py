"""Shapes captions in many phrasings: every phrasing reads back to its scene, held-out ones stay held out."""

from __future__ import annotations

import re
from itertools import product

import numpy as np
import pytest

from genlab.data.shapes import load_shapes
from genlab.data.shapes_text import (
    HELD_OUT_WORDS,
    SINGLE_HELD_OUT_FORMS,
    parse_caption,
    phrase,
    phrasings,
    read_caption,
)
from genlab.errors import GenlabError
from genlab.metrics.adherence import paraphrase_prompts

# Written out here rather than taken from genlab.data.shapes, so a mix-up there cannot hide.
CELLS = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
COLORS = ["red", "green", "blue", "yellow", "magenta", "cyan"]
SHAPES = ["circle", "square", "triangle"]


def single(shape: str, color: str, size: str, position: str) -> dict:
    return {"shapes": [dict(shape=shape, color=color, size=size, position=position)], "relation": None}


def two(first: tuple[str, str], relation: str, second: tuple[str, str]) -> dict:
    shapes = [dict(color=c, shape=s) for c, s in (first, second)]
    return {"shapes": shapes, "relation": relation}


@pytest.fixture(scope="module")
def shapes():
    return load_shapes()


def every_scene() -> list[dict]:
    """Every single-object scene (9 cells x 2 sizes x 3 shapes, colours in turn) and every two-object
    relation between every pair of shapes."""
    scenes = [
        single(shape, COLORS[i % 6], size, cell)
        for i, (shape, size, cell) in enumerate(product(SHAPES, ["small", "large"], CELLS))
    ]
    for i, (a, b, relation) in enumerate(product(SHAPES, SHAPES, ["left of", "above"])):
        scenes.append(two((COLORS[i % 6], a), relation, (COLORS[(i + 1) % 6], b)))
    return scenes


@pytest.mark.parametrize("held_out", [False, True])
def test_every_phrasing_the_generator_writes_reads_back_to_its_scene(held_out):
    count = 0
    for scene in every_scene():
        texts = phrasings(scene, held_out)
        assert texts and len(texts) == len(set(texts))
        for text in texts:
            assert read_caption(text) == scene, text
            assert read_caption(text[:1].upper() + text[1:] + ".") == scene
            count += 1
    assert count > (40_000 if held_out else 4_000)


def test_the_reader_knows_the_hand_written_phrasings():
    wanted = single("triangle", "cyan", "large", "center")["shapes"][0]
    assert parse_caption("  A Large  cyan TRIANGLE in the center. ") == wanted
    cases = {
        "top left: a tiny red disc": ("circle", "red", "small", "top left"),
        "a little green triangle in the lower-right corner": ("triangle", "green", "small", "bottom right"),
        "big blue box, middle": ("square", "blue", "large", "center"),
        "on the right side, one small yellow block.": ("square", "yellow", "small", "right"),
        "there is a large magenta circle at the upper middle": ("circle", "magenta", "large", "top"),
        "a small triangle in cyan at the middle left": ("triangle", "cyan", "small", "left"),
        "a green disk, big, at the bottom edge": ("circle", "green", "large", "bottom"),
    }
    for text, (shape, color, size, position) in cases.items():
        assert parse_caption(text) == dict(shape=shape, color=color, size=size, position=position), text


def test_two_object_phrasings_name_the_scene_from_either_object():
    red_circle, blue_square = ("red", "circle"), ("blue", "square")
    left = two(red_circle, "left of", blue_square)
    above = two(red_circle, "above", blue_square)
    assert read_caption("a red circle left of a blue square") == left
    assert read_caption("the blue square to the right of the red circle") == left
    assert read_caption("a red disk with a blue box to its right") == left
    assert read_caption("a blue square with a red circle to its left") == left
    assert read_caption("There is a blue block under a red circle.") == above
    assert read_caption("a red circle with a blue square beneath it") == above
    assert read_caption("a blue square with a red circle over it") == above


@pytest.mark.parametrize(
    "text, why",
    [
        ("", "empty"),
        ("a small red circle not at the top left", "'not' is unknown"),
        ("a red circle, a blue square", "2 shapes, 2 colours and 0 relations"),
        ("a red circle left of a square", "2 shapes, 1 colours"),
        ("a small large red circle", "two sizes or places"),
        ("a small red circle left of a blue square", "by colour alone"),
        ("<b>a red circle</b>", "'<' is unknown"),
    ],
)
def test_read_caption_says_what_is_wrong_in_one_line(text, why):
    with pytest.raises(GenlabError, match=re.escape(why)) as caught:
        read_caption(text)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200
    with pytest.raises(GenlabError, match="must be text"):
        read_caption(3)


def test_parse_caption_wants_one_object_with_all_four_attributes():
    with pytest.raises(GenlabError, match="no size or position"):
        parse_caption("a red circle")
    with pytest.raises(GenlabError, match="no position"):
        parse_caption("a small red circle")
    with pytest.raises(GenlabError, match="two-object caption"):
        parse_caption("a red circle left of a blue square")


def test_training_captions_use_every_training_choice_and_no_held_out_one(shapes):
    words = {w for c in shapes.captions for w in re.findall(r"[a-z]+", c.lower())}
    assert not words & HELD_OUT_WORDS
    assert {"little", "disk", "block", "middle", "edge", "side", "corner"} <= words
    singles = [c.lower().removesuffix(".") for c, a in zip(shapes.captions, shapes.attributes, strict=True)]
    for form in SINGLE_HELD_OUT_FORMS:
        assert not any(_form_of(c, form) for c in singles), form
    assert sum(c.startswith("there is ") for c in singles) > 500
    assert sum(re.search(r" in (red|green|blue|yellow|magenta|cyan) ", c) is not None for c in singles) > 500
    assert any(c[:1].isupper() for c in shapes.captions) and any(c.endswith(".") for c in shapes.captions)


def test_held_out_phrasings_never_appear_in_training_captions(shapes):
    captions = {c.lower().removesuffix(".") for c in shapes.captions}
    for i in range(0, len(shapes), len(shapes) // 300):
        scene = shapes.attributes[i]
        written = read_caption(shapes.captions[i])
        assert shapes.captions[i].lower().removesuffix(".") in phrasings(written)
        held_out = phrasings(written, held_out=True)
        assert not captions & set(held_out)
        assert all(
            set(re.findall(r"[a-z]+", t)) & HELD_OUT_WORDS
            or any(_form_of(t, f) for f in SINGLE_HELD_OUT_FORMS)
            for t in held_out
            if scene["relation"] is None
        )


def _form_of(text: str, form: str) -> bool:
    """Whether ``text`` has the shape of the sentence ``form`` (its fixed words and punctuation), with or
    without its article."""
    for variant in (form, form.replace("{article} ", "")):
        pattern = re.sub(r"\\\{\w+\\\}", ".+?", re.escape(variant))
        if re.fullmatch(pattern, text) is not None:
            return True
    return False


def test_phrase_draws_the_same_phrasing_from_the_same_seed_and_held_out_ones_on_request():
    scene = single("circle", "red", "small", "top left")
    a = [phrase(scene, np.random.default_rng(7)) for _ in range(2)]
    assert a[0] == a[1]
    rng = np.random.default_rng(0)
    drawn = [phrase(scene, rng, held_out=True) for _ in range(200)]
    normal = {t.lower().removesuffix(".") for t in drawn}
    assert normal <= set(phrasings(scene, held_out=True)) and len(normal) > 100
    assert all(read_caption(t) == scene for t in drawn)


def test_paraphrase_prompts_keeps_each_scene_in_held_out_words(shapes):
    prompts = ["a small red circle at the top left", "there is a large blue square on the right."]
    paraphrases = paraphrase_prompts(prompts)
    assert paraphrases == paraphrase_prompts(prompts)  # a fixed set: the same for every evaluation
    for prompt, paraphrase in zip(prompts, paraphrases, strict=True):
        assert parse_caption(paraphrase) == parse_caption(prompt)
        assert paraphrase.lower().removesuffix(".") in phrasings(read_caption(prompt), held_out=True)
    with pytest.raises(GenlabError, match="single-object"):
        paraphrase_prompts(["a red circle left of a blue square"])
