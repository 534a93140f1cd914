"""Procedural images of one or two coloured shapes with compositional captions and exact ground truth.

"a small red circle at the top left", "a blue square left of a green triangle": every word of a caption
is stored in the image's attributes, so prompt adherence of a generator can be checked exactly. Each
caption is one of many phrasings of its scene ("top left: a little red disk", genlab.data.shapes_text),
drawn from those the training phrasings allow.
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


def _describe(
    scene: dict[str, np.ndarray], image_size: int, rng: np.random.Generator
) -> tuple[list[str], list[dict]]:
    """Captions (each a training phrasing drawn by ``rng``, genlab.data.shapes_text) and JSON-ready
    ground truth for every image."""
    from genlab.data.shapes_text import phrase  # it reads this module's vocabulary

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
        relation = RELATIONS[scene["relation"][i]] if len(shapes) == 2 else None
        caption = phrase({"shapes": shapes, "relation": relation}, rng)
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
    rng = np.random.default_rng(seed)
    scene = _layout(count, rng)
    images = torch.from_numpy(_render(scene, size))
    captions, attributes = _describe(scene, size, rng)
    return ImageDataset(
        name="shapes",
        images=images,
        captions=captions,
        labels=torch.from_numpy(scene["kind"][:, 0].astype(np.int64)),
        class_names=list(SHAPE_NAMES),
        attributes=attributes,
    )


# ------------------------------------------------------------------------------------ reading back
#
# read_scene inverts the generator: it finds the shapes in the pixels, so that a text-to-image model's
# samples can be checked against their prompts. Per image: the background is the median colour (shapes
# cover at most about a fifth of the image); a pixel is ink when a channel differs from it by
# READ_INK_LEVEL (every colour differs from every background by 0.6 or more in some channel, so a pixel is
# ink from at most 42% coverage); each ink pixel takes the colour it points to from the background, and
# the connected ink pixels of one colour form a piece. Per piece: its coverage (alpha) is the projection of
# the pixels around it onto its colour, so the area and centroid count anti-aliased edges; the radius
# follows from the area for each kind, and the kind is the one whose rendering at that radius and centroid
# is closest to the alpha. The size class splits the radius between the two SIZES.

READ_INK_LEVEL = 0.25
READ_MIN_AREA = 0.35  # pieces below this fraction of the smallest shape's area are specks, not shapes
READ_LEVEL_SLACK = 0.15  # a shape's colour is its palette colour give or take the jitter
READ_BLURS = (0.0, 0.5, 0.8, 1.1, 1.5)  # Gaussian blurs (pixels) at which the kinds are compared
READ_CHUNK = 512  # images per pass: bounds the memory of the per-colour planes
READ_PIECES = 2048  # pieces of ink per pass: each is measured on a map of its own
ATTRIBUTE_NAMES = ("shape", "color", "size", "position")
_AREA_PER_RADIUS2 = (np.pi, 4.0, 2.0)  # circle, square, triangle: area / r^2


def read_scene(images: torch.Tensor, min_area: float = READ_MIN_AREA) -> list[list[dict]]:
    """The shapes each image of a (N, 3, S, S) batch in [0, 1] shows, read from its pixels.

    Per image a list of dicts in the dataset's vocabulary: 'shape' (one of SHAPE_NAMES), 'color' (a key of
    COLORS), 'size' (a key of SIZES), 'position' (a cell name of POSITIONS, the one holding the shape's
    centroid), and the measured 'cx', 'cy', 'radius' in pixels, as in the dataset's attributes. Shapes are
    listed in grid order (row by row, then left to right). Pieces of ink smaller than ``min_area`` times the
    smallest shape's area are ignored, so that specks in generated samples are not counted as shapes.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise GenlabError(f"read_scene needs RGB images (N, 3, S, S) in [0, 1], got {shape}")
    if images.shape[2] != images.shape[3] or images.shape[2] < MIN_SHAPES_SIZE:
        raise GenlabError(
            f"read_scene needs square images of at least {MIN_SHAPES_SIZE} px, got {tuple(images.shape)}"
        )
    pixels = images.detach().to("cpu", torch.float32).clamp(0.0, 1.0).numpy()
    smallest = _AREA_PER_RADIUS2[SHAPE_NAMES.index("triangle")] * _least_radius(pixels.shape[-1]) ** 2
    scenes: list[list[dict]] = []
    for start in range(0, len(pixels), READ_CHUNK):
        scenes.extend(_read_chunk(pixels[start : start + READ_CHUNK], min_area * smallest))
    return scenes


def _least_radius(size: int) -> float:
    """The least radius in pixels of a shape drawn on ``size``-pixel images."""
    return (1 - SIZE_JITTER) * min(SIZES.values()) * size


def _read_chunk(pixels: np.ndarray, min_area: float) -> list[list[dict]]:
    """read_scene on a (B, 3, S, S) float32 array, ignoring pieces of ink under ``min_area`` pixels."""
    from scipy import ndimage  # imported here: only reading needs it

    n = len(pixels)
    background = np.median(pixels.reshape(n, 3, -1), axis=2)
    diff = pixels - background[:, :, None, None]
    ink = np.abs(diff).max(axis=1) > READ_INK_LEVEL
    palette = np.array(list(COLORS.values()), dtype=np.float32)
    towards = palette[None] - background[:, None]  # (B, colours, 3): from the background to each colour
    towards /= np.maximum(np.linalg.norm(towards, axis=2, keepdims=True), 1e-6)
    color = np.einsum("bchw,bkc->bkhw", diff, towards).argmax(axis=1)
    masks = ink[:, None] & (color[:, None] == np.arange(len(COLORS))[:, None, None])

    # Label the (image, colour) planes at once; the structure connects 8-neighbours within a plane only.
    plane = np.zeros((3, 3, 3, 3), dtype=bool)
    plane[1, 1] = True
    labels, count = ndimage.label(masks, structure=plane)
    flat = np.flatnonzero(labels)
    piece = labels.reshape(-1)[flat] - 1
    # Only pieces with ink pixels for half the least area are measured (noise makes hundreds of specks).
    big = np.bincount(piece, minlength=count) >= min_area / 2
    inked = big[piece]
    flat, piece, count = flat[inked], (np.cumsum(big) - 1)[piece[inked]], int(big.sum())
    where = np.unravel_index(flat, labels.shape)  # image, colour, row, column of every ink pixel
    found: list[tuple[int, int, float, dict]] = []
    for start in range(0, count, READ_PIECES):
        chosen = (piece >= start) & (piece < start + READ_PIECES)
        pieces = (piece[chosen] - start, *(w[chosen] for w in where))
        found += _measure_pieces(pieces, diff, ink, background, towards, min_area)
    scenes: list[list[dict]] = [[] for _ in range(n)]
    for owner, _, _, shape in sorted(found, key=lambda f: f[:3]):
        scenes[owner].append(shape)
    return scenes


def _measure_pieces(
    pieces: tuple[np.ndarray, ...],
    diff: np.ndarray,
    ink: np.ndarray,
    background: np.ndarray,
    towards: np.ndarray,
    min_area: float,
) -> list[tuple[int, int, float, dict]]:
    """(image, cell, cx, shape dict) for every piece of ink that is a shape of ``min_area`` pixels or more.

    ``pieces`` gives each ink pixel's piece (numbered from 0), image, colour, row and column; ``diff`` is the
    images minus their ``background``, ``towards`` the unit directions from it to each colour.
    """
    from scipy import ndimage

    piece, image, hue, rows, cols = pieces
    count, size = int(piece.max()) + 1, diff.shape[-1]
    owner = np.zeros(count, dtype=np.int64)
    owner[piece] = image
    color = np.zeros(count, dtype=np.int64)
    color[piece] = hue
    own = np.zeros((count, size, size), dtype=bool)
    own[piece, rows, cols] = True

    # Alpha of each piece: the pixels within two of its own (anti-aliased or blurred edges) that are not
    # another piece's ink or edge, projected onto the piece's colour direction and divided by the level its
    # fully covered pixels reach: the mean of its brightest pixels, kept within the colour jitter of the
    # palette colour so that a blurred shape, whose pixels never reach full coverage, keeps its area.
    others = ink[owner] & ~own
    touching = _grow(own)
    near = _grow(touching) & ~others
    near &= touching | ~_grow(others)
    direction = towards[owner, color]
    alpha = np.einsum("mchw,mc->mhw", diff[owner], direction) * near
    full = alpha >= 0.85 * alpha.max(axis=(1, 2), keepdims=True)
    level = (alpha * full).sum(axis=(1, 2)) / np.maximum(full.sum(axis=(1, 2)), 1)
    palette = np.array(list(COLORS.values()), dtype=np.float32)
    nominal = np.einsum("mc,mc->m", palette[color] - background[owner], direction)
    alpha /= np.clip(level, (1 - READ_LEVEL_SLACK) * nominal, (1 + READ_LEVEL_SLACK) * nominal)[:, None, None]
    area = alpha.sum(axis=(1, 2))

    # A seam of mixed pixels where two shapes touch reads as a third colour; it is one pixel thin, while
    # every shape's ink spans two pixels both ways (in images where the smallest shape is 2.5 px across).
    wide = (own.any(axis=1).sum(axis=1) >= 2) & (own.any(axis=2).sum(axis=1) >= 2)
    keep = np.flatnonzero((wide | (_least_radius(size) < 1.25)) & (area >= min_area))
    if len(keep) == 0:
        return []
    alpha, area, owner, color = alpha[keep], area[keep], owner[keep], color[keep]
    centres = np.arange(size) + 0.5
    mx = (alpha.sum(axis=1) * centres).sum(axis=1) / area
    my = (alpha.sum(axis=2) * centres).sum(axis=1) / area

    # Render every kind at the radius its area implies, centred on the piece's centroid and blurred by each
    # of READ_BLURS, and keep the kind of the closest rendering (least squares).
    kinds = np.arange(len(SHAPE_NAMES))
    radius = np.sqrt(area[:, None] / np.array(_AREA_PER_RADIUS2)[None, :])  # (pieces, kinds)
    cy = my[:, None] - np.where(kinds == SHAPE_NAMES.index("triangle"), radius / 3, 0.0)  # centroid to centre
    cx = np.broadcast_to(mx[:, None], radius.shape)
    rendered = _coverage(np.tile(kinds, len(keep)), cx.ravel(), cy.ravel(), radius.ravel(), size)
    rendered = rendered.reshape(len(keep), len(kinds), size, size)
    misfit = np.full(radius.shape, np.inf)
    for sigma in READ_BLURS:
        blurred = ndimage.gaussian_filter(rendered, (0, 0, sigma, sigma), mode="constant")
        misfit = np.minimum(misfit, np.square(blurred - alpha[:, None]).sum(axis=(2, 3)))
    kind = misfit.argmin(axis=1)
    pick = np.arange(len(keep))
    radius, cy = radius[pick, kind], cy[pick, kind]

    split = np.sqrt(np.prod(list(SIZES.values()))) * size  # the geometric mean of the two radii
    row, col = (np.clip((v * 3 / size).astype(np.int64), 0, 2) for v in (my, mx))
    color_names, size_names = list(COLORS), list(SIZES)
    return [
        (
            int(owner[m]),
            int(row[m] * 3 + col[m]),
            float(mx[m]),
            {
                "shape": SHAPE_NAMES[kind[m]],
                "color": color_names[color[m]],
                "size": size_names[int(radius[m] >= split)],
                "position": POSITIONS[row[m] * 3 + col[m]][0],
                "cx": round(float(mx[m]), 3),
                "cy": round(float(cy[m]), 3),
                "radius": round(float(radius[m]), 3),
            },
        )
        for m in range(len(keep))
    ]


def _grow(masks: np.ndarray) -> np.ndarray:
    """(M, H, W) boolean masks grown by one pixel into their 8 neighbours."""
    grown = masks.copy()
    grown[:, 1:] |= masks[:, :-1]
    grown[:, :-1] |= masks[:, 1:]
    wide = grown.copy()
    wide[:, :, 1:] |= grown[:, :, :-1]
    wide[:, :, :-1] |= grown[:, :, 1:]
    return wide


def matches(scene: list[dict] | torch.Tensor, attributes: dict) -> dict[str, bool]:
    """Which attributes of a single-object prompt an image shows: {attribute: right, ..., 'count', 'all'}.

    ``scene`` is one image's read_scene list or the image itself ((3, S, S) or (1, 3, S, S) in [0, 1]);
    ``attributes`` holds any of 'shape', 'color', 'size', 'position' (as parse_caption returns them, or a
    dataset attribute dict with one entry in 'shapes'). Each is judged on the shape that gets the most of
    them right; 'count' says the image shows exactly one shape, and 'all' that everything is right.
    """
    if isinstance(scene, torch.Tensor):
        image = scene[None] if scene.ndim == 3 else scene
        if image.ndim != 4 or image.shape[0] != 1:
            raise GenlabError(
                f"matches checks one image (3, S, S), got a tensor of shape {tuple(scene.shape)}"
            )
        scene = read_scene(image)[0]
    if "shapes" in attributes:
        if len(attributes["shapes"]) != 1:
            count = len(attributes["shapes"])
            raise GenlabError(f"matches checks single-object prompts, got attributes of {count} shapes")
        attributes = attributes["shapes"][0]
    wanted = {key: attributes[key] for key in ATTRIBUTE_NAMES if key in attributes}
    if not wanted:
        raise GenlabError(f"no attribute to check: give any of {', '.join(ATTRIBUTE_NAMES)}")
    vocabulary = {
        "shape": SHAPE_NAMES,
        "color": tuple(COLORS),
        "size": tuple(SIZES),
        "position": tuple(name for name, _ in POSITIONS),
    }
    for key, value in wanted.items():
        if value not in vocabulary[key]:
            raise GenlabError(f"unknown {key} {value!r}; expected one of {', '.join(vocabulary[key])}")
    best = max(scene, key=lambda s: sum(s[k] == v for k, v in wanted.items()), default=None)
    result = {key: best is not None and best[key] == value for key, value in wanted.items()}
    result["count"] = len(scene) == 1
    result["all"] = all(result.values())
    return result
