"""Reading motion back from the pixels of moving-shapes clips, and scoring a clip against its caption.

Every frame is read by genlab.data.shapes.read_scene (colour, shape, size, centre of every shape); the
objects are linked from frame to frame by nearest centre; each object's track is fitted, axis by axis, with
the motion the data set draws: x_t = fold(x_0 + v t) into [r, side - r], a straight line reflected off the
walls (a least-squares search over the start x_0 and the velocity v), so a bounce is part of the model and not
a change of direction. The direction is the signs of the fitted (vx, vy) (an axis moves when |v| reaches
READ_STILL of the step of the slow speed), the speed the larger |v| against the geometric mean of the two
SPEEDS, and the motion is steady when the fit's root-mean-square error stays within READ_STEADY pixels per 32
px of side: frames played in a shuffled order fit no bouncing line.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import torch

from genlab.data.moving import DIRECTION_NAMES, DIRECTIONS, SPEEDS, bounce
from genlab.data.shapes import COLORS, MIN_SHAPES_SIZE, SHAPE_NAMES, SIZES, read_scene
from genlab.errors import GenlabError

READ_STILL = 0.4  # an axis moves when |v| is at least this fraction of the slow speed
READ_STEADY = 0.5  # pixels (per 32 px of side) of root-mean-square misfit a steady track may have
READ_STEP = 0.05  # pixels (per 32 px of side) between the velocities and starts the fit tries
READ_MAX_SPEED = 0.25  # the fastest motion the fit tries, in image sides a frame
READ_START_SLACK = 1.5  # pixels (per 32 px) the fitted start may differ from the first measured centre
READ_TIE = 1e-4  # squared pixels: breaks exact ties between fits, nothing more
SCORE_KEYS = ("color", "shape", "size", "direction", "speed")


def read_clips(clips: torch.Tensor) -> list[dict]:
    """What each clip of a (N, T, 3, S, S) batch in [0, 1] shows, read from its pixels.

    Per clip a dict: 'counts' (objects read in each frame), 'stable' (the same number, at least one, in every
    frame), and 'objects', one per track, each with per-frame 'colors', 'shapes', 'sizes' and 'track' (the
    centre (cx, cy) in pixels, None in a frame where the object was not found), the most common 'color',
    'shape' and 'size', the fitted 'velocity' (px a frame, at the first frame it was seen), 'direction' (a
    name of DIRECTION_NAMES, or 'still'), 'speed' (a key of SPEEDS), 'misfit' (root-mean-square, px) and
    'steady' (misfit within tolerance).
    """
    if not isinstance(clips, torch.Tensor) or clips.ndim != 5 or clips.shape[2] != 3:
        shape = tuple(clips.shape) if isinstance(clips, torch.Tensor) else type(clips).__name__
        raise GenlabError(f"read_clips needs RGB clips (N, T, 3, S, S) in [0, 1], got {shape}")
    n, frames, _, height, width = clips.shape
    if height != width or height < MIN_SHAPES_SIZE or frames < 2:
        raise GenlabError(
            f"read_clips needs clips of 2 or more square frames of at least {MIN_SHAPES_SIZE} px, "
            f"got {tuple(clips.shape)}"
        )
    scenes = read_scene(clips.reshape(n * frames, 3, height, width))
    return [_read_clip(scenes[i * frames : (i + 1) * frames], height) for i in range(n)]


def _read_clip(frames: list[list[dict]], side: int) -> dict:
    counts = [len(objects) for objects in frames]
    tracks = _link(frames)
    return {
        "counts": counts,
        "stable": min(counts) == max(counts) > 0,
        "objects": [_describe_track(track, side) for track in tracks],
    }


def _link(frames: list[list[dict]]) -> list[list[dict | None]]:
    """Tracks of objects across frames: seeded by the first frame showing the most common (non-zero) count,
    then extended frame by frame, forward and back, each object taking the nearest free track."""
    counts = [len(objects) for objects in frames]
    present = [c for c in counts if c > 0]
    if not present:
        return []
    modal = Counter(present).most_common(1)[0][0]
    seed = counts.index(modal)
    tracks: list[list[dict | None]] = [[None] * len(frames) for _ in range(modal)]
    for k, obj in enumerate(frames[seed]):
        tracks[k][seed] = obj
    last = [(o["cx"], o["cy"]) for o in frames[seed]]
    for order in (range(seed + 1, len(frames)), range(seed - 1, -1, -1)):
        here = list(last)
        for t in order:
            pairs = sorted(
                (np.hypot(o["cx"] - x, o["cy"] - y), j, k)
                for j, o in enumerate(frames[t])
                for k, (x, y) in enumerate(here)
            )
            used_objects: set[int] = set()
            used_tracks: set[int] = set()
            for _, j, k in pairs:
                if j in used_objects or k in used_tracks:
                    continue
                used_objects.add(j)
                used_tracks.add(k)
                tracks[k][t] = frames[t][j]
                here[k] = (frames[t][j]["cx"], frames[t][j]["cy"])
    return tracks


def _most_common(values: list) -> object:
    return Counter(v for v in values if v is not None).most_common(1)[0][0]


def _describe_track(track: list[dict | None], side: int) -> dict:
    seen = [o for o in track if o is not None]
    radius = float(np.median([o["radius"] for o in seen]))
    centres = np.array([[np.nan, np.nan] if o is None else [o["cx"], o["cy"]] for o in track])
    velocity, misfit = fit_motion(centres, radius, side)
    return {
        "colors": [None if o is None else o["color"] for o in track],
        "shapes": [None if o is None else o["shape"] for o in track],
        "sizes": [None if o is None else o["size"] for o in track],
        "track": [None if o is None else [o["cx"], o["cy"]] for o in track],
        "color": _most_common([o["color"] for o in seen]),
        "shape": _most_common([o["shape"] for o in seen]),
        "size": _most_common([o["size"] for o in seen]),
        "velocity": [round(float(v), 3) for v in velocity],
        "direction": direction_name(velocity, side),
        "speed": speed_name(velocity, side),
        "misfit": round(float(misfit), 3),
        "steady": bool(misfit <= READ_STEADY * side / 32),
    }


def fit_motion(centres: np.ndarray, radius: float, side: int) -> tuple[np.ndarray, float]:
    """Velocity (vx, vy) in px a frame and root-mean-square misfit (px) of the bouncing straight-line motion
    closest to a (T, 2) track of centres (NaN rows where the object was not seen), for a shape of ``radius``
    in a ``side``-px frame: per axis, a grid search over the velocity and the start near the first centre.

    The velocity is the one at the first frame the object was seen; with fewer than two frames seen it is
    zero and the misfit infinite.
    """
    seen = np.flatnonzero(~np.isnan(centres).any(axis=1))
    if len(seen) < 2:
        return np.zeros(2), float("inf")
    times = seen - seen[0]
    step = READ_STEP * side / 32
    speeds = np.arange(-READ_MAX_SPEED * side, READ_MAX_SPEED * side + step / 2, step)
    offsets = np.arange(-READ_START_SLACK, READ_START_SLACK + step / 2, step) * side / 32
    velocity, squares = np.zeros(2), 0.0
    for axis in (0, 1):
        measured = centres[seen, axis]
        # The walls the centre reflects off: r and side - r, moved out to any centre seen beyond them (the
        # radius read from anti-aliased pixels may be a little too large, and a wall the object passed
        # would fold its track back too early).
        lo = min(radius, side / 2, float(measured.min()))
        hi = max(side - radius, side / 2, float(measured.max()))
        starts = np.clip(measured[0] + offsets, lo, hi)
        v, x0 = np.meshgrid(speeds, starts, indexing="ij")
        model = bounce(x0, v, lo, hi, int(times[-1]) + 1)[..., times]  # (speeds, starts, seen frames)
        error = np.square(model - measured).sum(axis=-1)
        # A start at a wall fits both signs alike (out and back, or away); the data never bounces in its
        # first steps, so a hair's penalty on a first step that bounces breaks the tie for the one that does
        # not. Remaining ties go to the slower motion (the search order).
        first = x0 + v * (times[1] if len(times) > 1 else 1)
        error = error + READ_TIE * ((first < lo) | (first > hi))
        order = np.argsort(np.abs(speeds), kind="stable")
        best = order[error[order].min(axis=1).argmin()]
        velocity[axis] = speeds[best]
        squares += float(np.square(model[best] - measured).sum(axis=-1).min())
    return velocity, float(np.sqrt(squares / (2 * len(seen))))


def direction_name(velocity: np.ndarray | list[float], side: int) -> str:
    """The name in DIRECTION_NAMES of a velocity's signs, or 'still' when neither axis moves."""
    still = READ_STILL * SPEEDS["slow"] * side
    signs = tuple(int(np.sign(v)) if abs(v) >= still else 0 for v in velocity)
    return next((name for name, step in DIRECTIONS if step == signs), "still")


def speed_name(velocity: np.ndarray | list[float], side: int) -> str:
    """'slow' or 'normal' (keys of SPEEDS): the faster axis against the geometric mean of the two speeds."""
    split = float(np.sqrt(SPEEDS["slow"] * SPEEDS["normal"])) * side
    return "slow" if max(abs(v) for v in velocity) < split else "normal"


def score_clip(track: dict, prompt_attributes: dict) -> dict[str, bool]:
    """Which words of a single-object prompt a clip shows: {word: right, ..., 'one_object', 'all'}.

    ``track`` is one clip's read_clips dict; ``prompt_attributes`` holds any of 'color', 'shape', 'size',
    'direction', 'speed' (as parse_motion_caption gives them, or a clip's ground truth with one entry in
    'objects'). Each is judged on the track that gets the most of them right: 'color' and 'shape' must be
    right in every frame, 'size' most often, 'direction' from the fitted motion and only when it is steady,
    'speed' from the fitted motion; 'one_object' says every frame shows exactly one object; 'all' that
    everything is right.
    """
    if "objects" in prompt_attributes:
        if len(prompt_attributes["objects"]) != 1:
            count = len(prompt_attributes["objects"])
            raise GenlabError(f"score_clip checks single-object prompts, got attributes of {count} objects")
        prompt_attributes = prompt_attributes["objects"][0]
    wanted = {key: prompt_attributes[key] for key in SCORE_KEYS if key in prompt_attributes}
    if not wanted:
        raise GenlabError(f"no attribute to check: give any of {', '.join(SCORE_KEYS)}")
    vocabulary = {
        "color": tuple(COLORS),
        "shape": SHAPE_NAMES,
        "size": tuple(SIZES),
        "direction": DIRECTION_NAMES,
        "speed": tuple(SPEEDS),
    }
    for key, value in wanted.items():
        if value not in vocabulary[key]:
            raise GenlabError(f"unknown {key} {value!r}; expected one of {', '.join(vocabulary[key])}")

    def judge(obj: dict) -> dict[str, bool]:
        checks = {
            "color": all(c == wanted.get("color") for c in obj["colors"]),
            "shape": all(s == wanted.get("shape") for s in obj["shapes"]),
            "size": obj["size"] == wanted.get("size"),
            "direction": obj["steady"] and obj["direction"] == wanted.get("direction"),
            "speed": obj["speed"] == wanted.get("speed"),
        }
        return {key: checks[key] for key in wanted}

    results = [judge(obj) for obj in track["objects"]]
    result = max(results, key=lambda r: sum(r.values()), default={key: False for key in wanted})
    result["one_object"] = track["stable"] and track["counts"][0] == 1
    result["all"] = all(result.values())
    return result


def _alternatives(words) -> str:
    # Longest first, so "up and right" is tried before "up".
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_SIZE, _COLOR, _SHAPE, _WAY = (_alternatives(w) for w in (SIZES, COLORS, SHAPE_NAMES, DIRECTION_NAMES))
_OBJECT = f"a (?:({_SIZE}) )?({_COLOR}) ({_SHAPE}) moving ({_WAY})( slowly)?"
_MOTION_CAPTION = re.compile(f"{_OBJECT}(?: and {_OBJECT})?")


def parse_motion_caption(text: str) -> dict:
    """The objects a moving-shapes caption names, as {'objects': [...]}, each a dict of 'color', 'shape',
    'direction', 'speed' and, when the caption says it, 'size': "a small red circle moving up and right
    slowly" gives {'objects': [{'size': 'small', 'color': 'red', 'shape': 'circle', 'direction': 'up and
    right', 'speed': 'slow'}]}.

    Case, surrounding spaces, repeated spaces and a final full stop are forgiven; anything else raises
    GenlabError.
    """
    if not isinstance(text, str):
        raise GenlabError(f"a caption must be text, got {type(text).__name__}")
    words = " ".join(text.lower().split()).removesuffix(".").rstrip()
    found = _MOTION_CAPTION.fullmatch(words)
    if found is None:
        shown = repr(text if len(text) <= 60 else text[:57] + "...")
        raise GenlabError(f"{shown} is not a moving-shapes caption, like 'a small red circle moving right'")
    groups = found.groups()
    objects = []
    for size, color, shape, direction, slowly in (groups[:5], groups[5:]):
        if color is None:
            continue
        obj = {
            "color": color,
            "shape": shape,
            "direction": direction,
            "speed": "slow" if slowly else "normal",
        }
        if size is not None:
            obj = {"size": size, **obj}
        objects.append(obj)
    return {"objects": objects}
