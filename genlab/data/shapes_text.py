"""Shapes scenes said in many ways, and any of them read back to the scene.

Users type their own words: "top left: a tiny red disc" means what "a small red circle at the top left"
means. Every caption of the ``shapes`` data therefore names its scene in a phrasing drawn from a small
grammar:

- synonyms: small/little/tiny, large/big, circle/disk/disc, square/block/box, top/upper, bottom/lower,
  center/middle/centre, and several names for each grid cell ("top left", "top-left corner", "upper
  left", "top middle", "left side"...), each with its preposition ("at the top left", "in the top-left
  corner", "on the left side");
- sentence forms: "a small red circle at the top left", "there is ...", "at the top left, ...", "small
  red circle, top left", "a small circle in red at ...", "top left: ...", and for two objects "... left
  of ...", "... to the right of ..." (the same scene seen from the other object), "... with ... below it";
- optional articles (a, one, the, none), a capital letter and a full stop.

A fixed share of the grammar is held out of training: the words of ``HELD_OUT_WORDS`` and the sentence
forms marked held out. Training captions use neither (``phrase(..., held_out=False)``); held-out phrasings
(``held_out=True``) use at least one of them and are written only for evaluation (`genlab eval RUN
--prompts paraphrase`): they measure whether a text encoder passes meaning, not wording, to the image.

``read_caption`` inverts every phrasing: it reads the words of the grammar's vocabulary left to right
(longest phrase first, so "middle left" is a cell and not "middle" and "left") and rebuilds the scene;
a word the grammar does not know is an error, so "not at the top left" is never read as "at the top left".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import product

import numpy as np

from genlab.data.shapes import COLORS, POSITIONS, RELATIONS
from genlab.errors import GenlabError

SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
SHAPE_WORDS = {
    "circle": ("circle", "disk", "disc"),
    "square": ("square", "block", "box"),
    "triangle": ("triangle",),
}
ROW_WORDS = (("top", "upper"), ("middle",), ("bottom", "lower"))
COLUMN_WORDS = ("left", "center", "right")
CENTER_WORDS = ("center", "middle", "centre")
ARTICLES = ("a", "the", "one", "")
# Relations between two objects: phrase -> (relation of RELATIONS, whether the phrase names the objects in
# the other order). "Before" phrases stand between the two objects ("A right of B" is "B left of A"); the
# "after" ones end the sentence and place the second object against the first ("A with B below it").
RELATION_WORDS = {
    "left of": (("left of", "to the left of"), ("right of", "to the right of")),
    "above": (("above", "over"), ("below", "under", "beneath")),
}
RELATION_AFTER = {
    "left of": (("to its right",), ("to its left",)),
    "above": (("below it", "under it", "beneath it"), ("above it", "over it")),
}
HELD_OUT_WORDS = frozenset({"tiny", "big", "disc", "box", "upper", "lower", "centre", "beneath"})

# Sentence forms. Fields: {np} "a small red circle" (article, size, colour, shape), {bare} the same without
# the article, {pp} "at the top left", {place} "top left", {article} {size} {color} {shape} one by one;
# two objects: {first} and {second} ("a red circle"), {rel} and {after} relation phrases.
SINGLE_FORMS = (
    "{np} {pp}",
    "there is {np} {pp}",
    "{pp}, {np}",
    "{bare}, {place}",
    "{article} {size} {shape} in {color} {pp}",
)
SINGLE_HELD_OUT_FORMS = (
    "{place}: {np}",
    "{pp} there is {np}",
    "{article} {color} {shape}, {size}, {pp}",
)
TWO_FORMS = ("{first} {rel} {second}", "there is {first} {rel} {second}")
TWO_HELD_OUT_FORMS = ("{first} with {second} {after}",)
_FILLERS = frozenset({"a", "one", "the", "there", "is", "at", "in", "on", "with", ","})


@dataclass(frozen=True)
class Place:
    """One way to name a grid cell: bare ("top left") and with its preposition ("at the top left")."""

    bare: str
    phrase: str


def places(cell: int) -> tuple[Place, ...]:
    """Every name of the 3x3 grid cell ``cell`` (row-major), the captions' first (e.g. "at the top left")."""
    row, col = divmod(cell, 3)
    if row != 1 and col != 1:  # a corner
        side = COLUMN_WORDS[col]
        found = []
        for vertical in ROW_WORDS[row]:
            found += [
                Place(f"{vertical} {side}", f"at the {vertical} {side}"),
                Place(f"{vertical}-{side} corner", f"in the {vertical}-{side} corner"),
                Place(f"{vertical} {side} corner", f"in the {vertical} {side} corner"),
            ]
        return tuple(found)
    if row != 1:  # the middle of the top or bottom edge
        edge, other = ROW_WORDS[row]
        return (
            Place(edge, f"at the {edge}"),
            Place(f"{edge} middle", f"at the {edge} middle"),
            Place(f"{edge} edge", f"at the {edge} edge"),
            Place(f"{other} middle", f"in the {other} middle"),
        )
    if col != 1:  # the middle of the left or right edge
        side = COLUMN_WORDS[col]
        return (
            Place(side, f"on the {side}"),
            Place(f"{side} side", f"on the {side} side"),
            Place(f"middle {side}", f"at the middle {side}"),
            Place(f"{side} edge", f"at the {side} edge"),
        )
    return tuple(Place(word, f"in the {word}") for word in CENTER_WORDS)


def _held_out(text: str) -> bool:
    return any(word in HELD_OUT_WORDS for word in re.findall(r"[a-z]+", text.lower()))


def _finish(text: str, capital: bool, stop: bool) -> str:
    text = " ".join(text.split())
    return (text[:1].upper() + text[1:] if capital else text) + ("." if stop else "")


def _single_choices(obj: dict, held_out: bool) -> list[tuple]:
    """The (form, article, size word, shape word, place) choices of a single-object phrasing, before the
    held-out filter on words."""
    forms = SINGLE_FORMS + (SINGLE_HELD_OUT_FORMS if held_out else ())
    cell = [name for name, _ in POSITIONS].index(obj["position"])
    return [forms, ARTICLES, SIZE_WORDS[obj["size"]], SHAPE_WORDS[obj["shape"]], places(cell)]


def _render_single(obj: dict, form: str, article: str, size: str, shape: str, place: Place) -> str:
    color = obj["color"]
    named = {"article": article, "size": size, "color": color, "shape": shape}
    bare = f"{size} {color} {shape}"
    return form.format(np=f"{article} {bare}", bare=bare, pp=place.phrase, place=place.bare, **named)


def _two_choices(relation: str, held_out: bool) -> list[tuple]:
    forward, backward = RELATION_WORDS[relation]
    after_forward, after_backward = RELATION_AFTER[relation]
    spoken = [(form, phrase, False) for form in TWO_FORMS for phrase in forward]
    spoken += [(form, phrase, True) for form in TWO_FORMS for phrase in backward]
    if held_out:
        spoken += [(form, phrase, False) for form in TWO_HELD_OUT_FORMS for phrase in after_forward]
        spoken += [(form, phrase, True) for form in TWO_HELD_OUT_FORMS for phrase in after_backward]
    return spoken


def _render_two(shapes: list[dict], spoken: tuple, articles: tuple[str, str], words: tuple[str, str]) -> str:
    form, phrase, swap = spoken
    named = [f"{a} {s['color']} {w}" for a, s, w in zip(articles, shapes, words, strict=True)]
    first, second = named[::-1] if swap else named
    return form.format(first=first, second=second, rel=phrase, after=phrase)


def phrasings(scene: dict, held_out: bool = False) -> list[str]:
    """Every phrasing of ``scene`` (a dataset attribute dict: 'shapes' and 'relation') the grammar writes:
    the training ones, or with ``held_out`` the held-out ones (each uses a held-out word or form). Lower
    case without a full stop; the capital and the stop are a coin flip each in ``phrase``."""
    out = []
    shapes = scene["shapes"]
    if scene.get("relation") is None:
        for form, article, size, shape, place in product(*_single_choices(shapes[0], held_out)):
            text = _finish(_render_single(shapes[0], form, article, size, shape, place), False, False)
            if (form in SINGLE_HELD_OUT_FORMS or _held_out(text)) == held_out:
                out.append(text)
        return list(dict.fromkeys(out))  # the forms without an article repeat for each article
    words = [SHAPE_WORDS[s["shape"]] for s in shapes]
    for spoken in _two_choices(scene["relation"], held_out):
        for first, second, w1, w2 in product(ARTICLES[:3], ARTICLES[:3], *words):
            text = _finish(_render_two(shapes, spoken, (first, second), (w1, w2)), False, False)
            if (spoken[0] in TWO_HELD_OUT_FORMS or _held_out(text)) == held_out:
                out.append(text)
    return list(dict.fromkeys(out))


def phrase(scene: dict, rng: np.random.Generator, held_out: bool = False) -> str:
    """One phrasing of ``scene`` drawn by ``rng``: every choice of the grammar uniform (held out: drawn
    again until the phrasing uses a held-out word or form)."""
    while True:
        shapes = scene["shapes"]
        if scene.get("relation") is None:
            choices = _single_choices(shapes[0], held_out)
            picked = [options[rng.integers(len(options))] for options in choices]
            text = _render_single(shapes[0], *picked)
            form_held_out = picked[0] in SINGLE_HELD_OUT_FORMS
        else:
            spoken_options = _two_choices(scene["relation"], held_out)
            spoken = spoken_options[rng.integers(len(spoken_options))]
            articles = tuple(ARTICLES[rng.integers(3)] for _ in shapes)
            words = tuple(SHAPE_WORDS[s["shape"]][rng.integers(len(SHAPE_WORDS[s["shape"]]))] for s in shapes)
            text = _render_two(shapes, spoken, articles, words)  # type: ignore[arg-type]
            form_held_out = spoken[0] in TWO_HELD_OUT_FORMS
        capital, stop = (bool(b) for b in rng.integers(0, 2, size=2))
        text = _finish(text, capital, stop)
        if (form_held_out or _held_out(text)) == held_out:
            return text


# ------------------------------------------------------------------------------------------ reading


def _vocabulary() -> dict[str, tuple[str, str]]:
    """Every phrase the reader knows -> (kind, value): colour, shape, size, cell, or relation
    ('before' or 'after', relation, swapped)."""
    vocab: dict[str, tuple] = {}
    for color in COLORS:
        vocab[color] = ("color", color)
    for shape, words in SHAPE_WORDS.items():
        vocab.update({w: ("shape", shape) for w in words})
    for size, words in SIZE_WORDS.items():
        vocab.update({w: ("size", size) for w in words})
    for cell, (name, _) in enumerate(POSITIONS):
        vocab.update({p.bare: ("position", name) for p in places(cell)})
    for relation in RELATIONS:
        for swap, words in enumerate(RELATION_WORDS[relation]):
            vocab.update({w: ("relation", ("before", relation, bool(swap))) for w in words})
        for swap, words in enumerate(RELATION_AFTER[relation]):
            vocab.update({w: ("relation", ("after", relation, bool(swap))) for w in words})
    return vocab


_VOCABULARY = _vocabulary()
_PHRASE = re.compile(
    r"(?<![\w-])(?:{})(?![\w-])".format(
        "|".join(re.escape(p) for p in sorted(_VOCABULARY, key=len, reverse=True))
    )
)
_REST = re.compile(r"[\w-]+|[^\w\s]")


def read_caption(text: str) -> dict:
    """The scene a shapes caption names, in any phrasing of the grammar (and any mix of its words):
    {'shapes': [{'color', 'shape', and 'size', 'position' where named}, ...], 'relation': None or one of
    RELATIONS}, the first object the one the relation starts from ("a blue square right of a red circle"
    gives the red circle first, 'left of'). Case, spaces, commas and a final full stop are forgiven; a word
    the grammar does not know, or a scene it cannot be (two colours and one shape), raises GenlabError."""
    if not isinstance(text, str):
        raise GenlabError(f"a caption must be text, got {type(text).__name__}")
    words = " ".join(text.lower().split()).removesuffix(".").rstrip()
    found = [(m.start(), _VOCABULARY[m.group()]) for m in _PHRASE.finditer(words)]
    rest = _REST.findall(_PHRASE.sub(" ", words))
    unknown = [w for w in rest if w not in _FILLERS and w != ":"]
    if unknown or not words:
        why = f"'{unknown[0][:16]}' is unknown" if unknown else "it is empty"
        raise GenlabError(
            f"{_shown(text)} is not a shapes caption ({why}), e.g. 'a small red circle at the top left'"
        )
    kinds: dict[str, list] = {"color": [], "shape": [], "size": [], "position": [], "relation": []}
    for _, (kind, value) in found:
        kinds[kind].append(value)
    n = len(kinds["shape"])
    if n not in (1, 2) or len(kinds["color"]) != n or len(kinds["relation"]) != n - 1:
        raise GenlabError(
            f"{_shown(text)} is not a shapes caption (it names {n} shapes, {len(kinds['color'])} colours and "
            f"{len(kinds['relation'])} relations), e.g. 'a small red circle at the top left'"
        )
    if n == 1:
        if len(kinds["size"]) > 1 or len(kinds["position"]) > 1:
            raise GenlabError(f"{_shown(text)} is not a shapes caption (one shape, two sizes or places)")
        shape = {"color": kinds["color"][0], "shape": kinds["shape"][0]}
        shape.update({k: kinds[k][0] for k in ("size", "position") if kinds[k]})
        return {"shapes": [shape], "relation": None}
    if kinds["size"] or kinds["position"]:
        raise GenlabError(f"{_shown(text)} is not a shapes caption (two shapes are named by colour alone)")
    shapes = [{"color": c, "shape": s} for c, s in zip(kinds["color"], kinds["shape"], strict=True)]
    _, relation, swap = kinds["relation"][0]
    return {"shapes": shapes[::-1] if swap else shapes, "relation": relation}


def parse_caption(text: str) -> dict[str, str]:
    """The attributes a single-object caption names, in any phrasing: "a small red circle at the top left"
    and "top left: a tiny red disc" both give {'shape': 'circle', 'color': 'red', 'size': 'small',
    'position': 'top left'}. Anything that is not a single object with all four raises GenlabError."""
    scene = read_caption(text)
    if scene["relation"] is not None:
        raise GenlabError(
            f"{_shown(text)} is a two-object caption; parse_caption reads single-object ones, "
            "like 'a small red circle at the top left'"
        )
    shape = scene["shapes"][0]
    missing = [k for k in ("size", "position") if k not in shape]
    if missing:
        raise GenlabError(
            f"{_shown(text)} is not a full shapes caption (no {' or '.join(missing)}), "
            "like 'a small red circle at the top left'"
        )
    return {k: shape[k] for k in ("shape", "color", "size", "position")}


def _shown(text: str) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= 48 else flat[:45] + "...")
