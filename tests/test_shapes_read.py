"""Reading shapes back from pixels: read_scene on real and hand-drawn images, matches, parse_caption."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from genlab.data import ImageDataset, load_dataset
from genlab.data.shapes import matches, read_scene
from genlab.data.shapes_text import parse_caption
from genlab.errors import GenlabError

KEYS = ("shape", "color", "size", "position")
# Written out here rather than taken from genlab.data.shapes, so a mix-up there cannot hide.
CELLS = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
RGB = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.85, 0.1),
    "blue": (0.1, 0.2, 0.95),
    "yellow": (0.95, 0.9, 0.1),
    "magenta": (0.9, 0.1, 0.9),
    "cyan": (0.1, 0.9, 0.9),
}
RADIUS = {"small": 0.09 * 32, "large": 0.15 * 32}


@pytest.fixture(scope="module")
def everything() -> ImageDataset:
    return load_dataset("shapes", "all")


@pytest.fixture(scope="module")
def shapes(everything) -> ImageDataset:
    """A spread of 1,500 of the 10,000 real shapes images, about half with one shape, half with two."""
    return everything.spread(1500)


@pytest.fixture(scope="module")
def scenes(shapes) -> list[list[dict]]:
    return read_scene(shapes.images)


def score(read: list[dict], truth: list[dict]) -> dict[str, bool]:
    """Per attribute: right for every shape of the image (under the best pairing of read and true shapes)."""
    best = {key: False for key in KEYS}
    if len(read) == len(truth):
        for order in [[0]] if len(truth) == 1 else [[0, 1], [1, 0]]:
            right = {
                key: all(read[o][key] == t[key] for o, t in zip(order, truth, strict=True)) for key in KEYS
            }
            if sum(right.values()) > sum(best.values()):
                best = right
    best["count"] = len(read) == len(truth)
    best["all"] = all(best.values())
    return best


def accuracy(attributes: list[dict], scenes: list[list[dict]], two: bool) -> dict[str, float]:
    """Fraction of the one-shape (or two-shape) images with each attribute, the count and all right."""
    rows = [
        score(scene, attrs["shapes"])
        for scene, attrs in zip(scenes, attributes, strict=True)
        if (attrs["relation"] is not None) == two
    ]
    assert len(rows) > 250
    return {key: float(np.mean([row[key] for row in rows])) for key in (*KEYS, "count", "all")}


@pytest.mark.parametrize("two", [False, True], ids=["one shape", "two shapes"])
def test_reads_real_images(shapes, scenes, two):
    got = accuracy(shapes.attributes, scenes, two)
    assert min(got.values()) >= 0.99, got


def test_measured_geometry_is_close(shapes, scenes):
    for scene, attrs in zip(scenes, shapes.attributes, strict=True):
        truth = sorted(attrs["shapes"], key=lambda s: s["color"])
        for read, true in zip(sorted(scene, key=lambda s: s["color"]), truth, strict=True):
            for key in ("cx", "cy", "radius"):
                assert read[key] == pytest.approx(true[key], abs=0.5), (key, read, true)


def test_mild_noise_and_blur_keep_reading_right(shapes):
    generator = torch.Generator().manual_seed(0)
    images = shapes.images[:600]
    noisy = (images + 0.03 * torch.randn(images.shape, generator=generator)).clamp(0, 1)
    blurred = torch.from_numpy(ndimage.gaussian_filter(images.numpy(), (0, 0, 0.7, 0.7)))
    for changed in (noisy, blurred):
        scenes = read_scene(changed)
        for two in (False, True):
            got = accuracy(shapes.attributes[:600], scenes, two)
            assert min(got.values()) >= 0.95, got


# ------------------------------------------------------------------------------ hand-drawn shapes


def draw(
    shapes: list[tuple[str, str, float, float, float]], background: float, size: int = 32
) -> torch.Tensor:
    """A (3, size, size) image of (kind, colour, radius, cx, cy) shapes, from 8x8 samples per pixel."""
    k = 8
    t = (np.arange(size * k) + 0.5) / k
    x, y = t[None, :], t[:, None]
    image = np.full((3, size, size), background)
    for kind, color, r, cx, cy in shapes:
        dx, dy = x - cx, y - cy
        if kind == "circle":
            inside = dx**2 + dy**2 <= r**2
        elif kind == "square":
            inside = (np.abs(dx) <= r) & (np.abs(dy) <= r)
        else:  # apex up at (cx, cy - r), base 2r wide at y = cy + r
            inside = (dy <= r) & (2 * np.abs(dx) <= dy + r)
        cover = inside.reshape(size, k, size, k).mean(axis=(1, 3))
        image += cover * (np.array(RGB[color])[:, None, None] - background)
    return torch.from_numpy(image).float()


def test_reads_every_hand_drawn_single_shape():
    rng = np.random.default_rng(0)
    images, truth = [], []
    colors = list(RGB)
    for i, (kind, size, cell) in enumerate(
        (kind, size, cell)
        for kind in ("circle", "square", "triangle")
        for size in RADIUS
        for cell in range(9)
    ):
        r = RADIUS[size] * rng.uniform(0.93, 1.07)
        slack = 32 / 6 - r
        cx = (cell % 3 + 0.5) * 32 / 3 + rng.uniform(-slack, slack)
        cy = (cell // 3 + 0.5) * 32 / 3 + rng.uniform(-slack, slack)
        color = colors[i % len(colors)]
        images.append(draw([(kind, color, r, cx, cy)], background=rng.uniform(0, 0.2)))
        truth.append({"shape": kind, "color": color, "size": size, "position": CELLS[cell]})
    scenes = read_scene(torch.stack(images))
    for scene, want in zip(scenes, truth, strict=True):
        assert len(scene) == 1, (scene, want)
        assert {key: scene[0][key] for key in KEYS} == want


def test_reads_two_hand_drawn_shapes_in_grid_order_and_ignores_specks():
    image = draw(
        [
            ("square", "cyan", 4.8, 26.5, 26.0),
            ("triangle", "magenta", 2.9, 5.0, 5.5),
            ("circle", "red", 0.6, 16, 5),
        ],
        background=0.1,
    )
    scene = read_scene(image[None])[0]
    assert [(s["shape"], s["color"], s["size"], s["position"]) for s in scene] == [
        ("triangle", "magenta", "small", "top left"),
        ("square", "cyan", "large", "bottom right"),
    ]
    assert read_scene(torch.full((2, 3, 32, 32), 0.15)) == [[], []]


def test_read_scene_rejects_what_is_not_a_batch_of_rgb_images():
    for bad in (
        torch.zeros(3, 32, 32),
        torch.zeros(2, 1, 32, 32),
        torch.zeros(2, 3, 32, 24),
        np.zeros((1, 3, 32, 32)),
    ):
        with pytest.raises(GenlabError, match="read_scene needs"):
            read_scene(bad)


# ----------------------------------------------------------------------------------------- matches


def test_matches_checks_each_attribute_of_a_single_object_prompt(shapes, scenes):
    singles = [i for i, attrs in enumerate(shapes.attributes) if attrs["relation"] is None][:200]
    for i in singles:
        wanted = parse_caption(shapes.captions[i])
        assert matches(scenes[i], wanted) == {**dict.fromkeys(KEYS, True), "count": True, "all": True}
    i = singles[0]
    wanted = parse_caption(shapes.captions[i])
    other = next(c for c in RGB if c != wanted["color"])
    assert matches(shapes.images[i], {**wanted, "color": other}) == {
        **dict.fromkeys(KEYS, True),
        "color": False,
        "count": True,
        "all": False,
    }
    assert matches(shapes.images[i : i + 1], {"shape": wanted["shape"]}) == {
        "shape": True,
        "count": True,
        "all": True,
    }
    assert matches(scenes[i], shapes.attributes[i])["all"]  # the dataset's own attributes work too
    assert matches([], wanted) == {**dict.fromkeys(KEYS, False), "count": False, "all": False}


def test_matches_flags_a_second_shape_and_rejects_bad_attributes(shapes, scenes):
    i = next(i for i, attrs in enumerate(shapes.attributes) if attrs["relation"] is not None)
    first = shapes.attributes[i]["shapes"][0]
    result = matches(scenes[i], first)
    assert result["count"] is False and result["all"] is False
    assert all(result[key] for key in KEYS)
    with pytest.raises(GenlabError, match="single-object"):
        matches(scenes[i], shapes.attributes[i])
    with pytest.raises(GenlabError, match="unknown color 'purple'"):
        matches(scenes[i], {"color": "purple"})
    with pytest.raises(GenlabError, match="no attribute"):
        matches(scenes[i], {"hue": "red"})
    with pytest.raises(GenlabError, match="one image"):
        matches(shapes.images[:2], first)


# ----------------------------------------------------------------------------------- parse_caption


def test_parse_caption_round_trips_every_single_object_caption(everything):
    count = 0
    for caption, attrs in zip(everything.captions, everything.attributes, strict=True):
        if attrs["relation"] is None:
            assert parse_caption(caption) == {key: attrs["shapes"][0][key] for key in KEYS}
            count += 1
    assert count > 4000
    assert parse_caption("  A Large  cyan TRIANGLE in the center. ") == {
        "shape": "triangle",
        "color": "cyan",
        "size": "large",
        "position": "center",
    }


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a red circle",
        "a small red circle",
        "a small red hexagon at the top left",
        "a small purple circle at the top left",
        "a small red circle not at the top left",
        "a small red circle at the top left and a blue square",
        "a small large red circle at the top left",
        "a handwritten 3",
        "a small red circle\nat the top left, " + "x" * 200,
    ],
)
def test_parse_caption_rejects_what_is_not_a_shapes_caption(text):
    with pytest.raises(GenlabError, match="not a (full )?shapes caption") as caught:
        parse_caption(text)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 150


def test_parse_caption_says_two_object_captions_are_not_read():
    with pytest.raises(GenlabError, match="two-object caption"):
        parse_caption("a red circle left of a blue square")
    with pytest.raises(GenlabError, match="must be text"):
        parse_caption(None)
