"""Procedural images of one or two coloured shapes with compositional captions and exact ground truth.

"a small red circle at the top left", "a blue square left of a green triangle": every word of a caption
is stored in the image's attributes, so prompt adherence of a generator can be checked exactly.
The images are the same on every run: they come from a fixed generation seed, not the split seed.

Geometry: x runs right and y down in pixel units, pixel (row i, column j) covering [j, j+1] x [i, i+1].
The image is a 3x3 grid of cells; a shape's bounding box [cx - r, cx + r] x [cy - r, cy + r] lies inside
its cell, so shapes never leave the image and two shapes in different cells never overlap.
A circle has radius r, a square half-side r, and a triangle (apex up) base 2r and height 2r.
"""

from __future__ import annotations

import numpy as np
import torch

from genlab.data.base import ImageDataset
from genlab.errors import GenlabError

SHAPES_COUNT = 10_000
SHAPES_SIZE = 32
SHAPES_SEED = 1234
MIN_SHAPES_SIZE = 8  # below this a small triangle is a pixel or two and its caption would be a lie
SUPERSAMPLE = 4  # render at 4x and average 4x4 blocks: anti-aliased edges with exact area coverage
ONE_SHAPE_FRACTION = 0.5

SHAPE_NAMES = ("circle", "square", "triangle")
COLORS = {  # pure-ish RGB, a little off the corners of the cube so colour jitter stays in range
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.85, 0.1),
    "blue": (0.1, 0.2, 0.95),
    "yellow": (0.95, 0.9, 0.1),
    "magenta": (0.9, 0.1, 0.9),
    "cyan": (0.1, 0.9, 0.9),
}
COLOR_JITTER = 0.05
SIZES = {"small": 0.09, "large": 0.15}  # radius as a fraction of the image side
SIZE_JITTER = 0.08  # relative
BACKGROUND_MAX = 0.2  # background is a plain dark gray with level in [0, BACKGROUND_MAX]

# 3x3 grid cells in row-major order: (name stored in attributes, phrase used in captions).
POSITIONS = (
    ("top left", "at the top left"),
    ("top", "at the top"),
    ("top right", "at the top right"),
    ("left", "on the left"),
    ("center", "in the center"),
    ("right", "on the right"),
    ("bottom left", "at the bottom left"),
    ("bottom", "at the bottom"),
    ("bottom right", "at the bottom right"),
)
RELATIONS = ("left of", "above")


def _layout(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw every image's scene: per slot (first, second shape) its kind, colour, size and grid cell."""
    two = rng.random(n) >= ONE_SHAPE_FRACTION
    kind = rng.integers(0, len(SHAPE_NAMES), size=(n, 2))
    color = rng.integers(0, len(COLORS), size=(n, 2))
    # The second shape never repeats the first one's colour, so "a red circle above a red square" never
    # needs the shape word alone to tell them apart.
    color[:, 1] = (color[:, 0] + rng.integers(1, len(COLORS), size=n)) % len(COLORS)
    size = rng.integers(0, len(SIZES), size=(n, 2))
    relation = rng.integers(0, len(RELATIONS), size=n)

    single_cell = rng.integers(0, 9, size=n)
    line = rng.integers(0, 3, size=n)  # the row (for "left of") or column (for "above") both shapes share
    pairs = np.array([(0, 1), (0, 2), (1, 2)])[rng.integers(0, 3, size=n)]  # first before second
    left_of = relation == 0
    row = np.where(left_of[:, None], line[:, None], pairs)
    col = np.where(left_of[:, None], pairs, line[:, None])
    cell = row * 3 + col
    cell[~two, 0] = single_cell[~two]

    return {
        "two": two,
        "kind": kind,
        "color": color,
        "size": size,
        "relation": relation,
        "cell": cell,
        "radius_jitter": rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER, size=(n, 2)),
        "offset": rng.uniform(-1.0, 1.0, size=(n, 2, 2)),
        "color_jitter": rng.uniform(-COLOR_JITTER, COLOR_JITTER, size=(n, 2, 3)),
        "background": rng.uniform(0.0, BACKGROUND_MAX, size=n),
    }


def _geometry(scene: dict[str, np.ndarray], image_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (cx, cy) and radii in pixels, each (N, 2), from the scene's cells and jitters."""
    side = image_size / 3
    radius = np.array(list(SIZES.values()))[scene["size"]] * scene["radius_jitter"] * image_size
    # Move the centre at most as far as keeps the bounding box inside its cell.
    slack = np.maximum(side / 2 - radius, 0.0)
    cx = (scene["cell"] % 3 + 0.5) * side + scene["offset"][..., 0] * slack
    cy = (scene["cell"] // 3 + 0.5) * side + scene["offset"][..., 1] * slack
    return cx, cy, radius


def _coverage(kind: np.ndarray, cx: np.ndarray, cy: np.ndarray, radius: np.ndarray, size: int) -> np.ndarray:
    """Fraction of each pixel a shape covers, (B, size, size), from SUPERSAMPLE^2 samples per pixel."""
    coverage = np.zeros((len(kind), size, size), dtype=np.float32)
    if len(kind) == 0:
        return coverage
    # Sample only a square window around each shape instead of the whole image: the shapes are small,
    # so this does several times less work. The window spans the bounding box plus one pixel of rounding.
    window = min(int(np.ceil(2 * radius.max())) + 1, size)
    x0 = np.clip(np.floor(cx - radius).astype(np.int64), 0, size - window)
    y0 = np.clip(np.floor(cy - radius).astype(np.int64), 0, size - window)
    offsets = (np.arange(window * SUPERSAMPLE, dtype=np.float32) + 0.5) / SUPERSAMPLE
    dx = (x0[:, None] + offsets[None, :] - cx[:, None]).astype(np.float32)[:, None, :]
    dy = (y0[:, None] + offsets[None, :] - cy[:, None]).astype(np.float32)[:, :, None]
    r = radius.astype(np.float32)[:, None, None]
    patches = np.zeros((len(kind), window, window), dtype=np.float32)
    for k, name in enumerate(SHAPE_NAMES):
        idx = np.flatnonzero(kind == k)
        if len(idx) == 0:
            continue
        x, y, rk = dx[idx], dy[idx], r[idx]
        if name == "circle":
            inside = x * x + y * y <= rk * rk
        elif name == "square":
            inside = (np.abs(x) <= rk) & (np.abs(y) <= rk)
        else:  # apex at (cx, cy - r), base from cx - r to cx + r at y = cy + r
            inside = (y <= rk) & (2 * np.abs(x) <= y + rk)
        blocks = inside.reshape(len(idx), window, SUPERSAMPLE, window, SUPERSAMPLE)
        patches[idx] = blocks.sum(axis=(2, 4), dtype=np.float32) * (1.0 / SUPERSAMPLE**2)
    steps = np.arange(window)
    rows = y0[:, None, None] + steps[None, :, None]
    cols = x0[:, None, None] + steps[None, None, :]
    coverage[np.arange(len(kind))[:, None, None], rows, cols] = patches
    return coverage


def _render(scene: dict[str, np.ndarray], image_size: int) -> np.ndarray:
    """(N, 3, S, S) float32 images: each shape's colour blended over the background by its coverage."""
    n = len(scene["two"])
    cx, cy, radius = _geometry(scene, image_size)
    rgb = np.array(list(COLORS.values()), dtype=np.float32)[scene["color"]] + scene["color_jitter"]
    rgb = np.clip(rgb, 0.0, 1.0).astype(np.float32)
    images = np.empty((n, 3, image_size, image_size), dtype=np.float32)
    # Chunks bound the memory of the supersampled masks and per-chunk temporaries (~4M pixels each).
    chunk = max(1, 4_000_000 // image_size**2)
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        background = scene["background"][sl].astype(np.float32)[:, None, None, None]
        out = np.broadcast_to(background, (sl.stop - sl.start, 3, image_size, image_size)).copy()
        for slot in (0, 1):
            a = np.arange(sl.stop - sl.start) if slot == 0 else np.flatnonzero(scene["two"][sl])
            kind, x, y, r = (v[sl, slot][a] for v in (scene["kind"], cx, cy, radius))
            cov = np.zeros((sl.stop - sl.start, image_size, image_size), dtype=np.float32)
            cov[a] = _coverage(kind, x, y, r, image_size)
            out += cov[:, None] * (rgb[sl, slot][:, :, None, None] - background)
        images[sl] = out
    return images


def _describe(scene: dict[str, np.ndarray], image_size: int) -> tuple[list[str], list[dict]]:
    """Captions and JSON-ready ground truth for every image."""
    cx, cy, radius = _geometry(scene, image_size)
    color_names, size_names = list(COLORS), list(SIZES)
    captions, attributes = [], []
    for i in range(len(scene["two"])):
        slots = (0, 1) if scene["two"][i] else (0,)
        shapes = [
            {
                "shape": SHAPE_NAMES[scene["kind"][i, s]],
                "color": color_names[scene["color"][i, s]],
                "size": size_names[scene["size"][i, s]],
                "position": POSITIONS[scene["cell"][i, s]][0],
                "cx": round(float(cx[i, s]), 3),
                "cy": round(float(cy[i, s]), 3),
                "radius": round(float(radius[i, s]), 3),
            }
            for s in slots
        ]
        first = shapes[0]
        if len(shapes) == 1:
            relation = None
            phrase = POSITIONS[scene["cell"][i, 0]][1]
            caption = f"a {first['size']} {first['color']} {first['shape']} {phrase}"
        else:
            relation = RELATIONS[scene["relation"][i]]
            second = shapes[1]
            caption = f"a {first['color']} {first['shape']} {relation} a {second['color']} {second['shape']}"
        captions.append(caption)
        level = round(float(scene["background"][i]), 4)
        attributes.append({"shapes": shapes, "relation": relation, "background": [level] * 3})
    return captions, attributes


def load_shapes(
    image_size: int | None = None, count: int = SHAPES_COUNT, seed: int = SHAPES_SEED
) -> ImageDataset:
    """The shapes dataset: ``count`` RGB images of ``image_size`` (default 32) pixels.

    The scenes depend only on ``seed`` and ``count``; ``image_size`` changes the resolution they are
    drawn at, not where the shapes are.
    """
    size = SHAPES_SIZE if image_size is None else image_size
    if size < MIN_SHAPES_SIZE:
        raise GenlabError(f"shapes images must be at least {MIN_SHAPES_SIZE} px, got image_size={size}")
    scene = _layout(count, np.random.default_rng(seed))
    images = torch.from_numpy(_render(scene, size))
    captions, attributes = _describe(scene, size)
    return ImageDataset(
        name="shapes",
        images=images,
        captions=captions,
        labels=torch.from_numpy(scene["kind"][:, 0].astype(np.int64)),
        class_names=list(SHAPE_NAMES),
        attributes=attributes,
    )
